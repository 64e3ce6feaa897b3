/**
 * The native CPU engine: BERT on OpenBLAS (through Deno FFI) plus a small C kernel library, with TypeScript
 * kernels as the fallback when `build/libbertforge_kernels.so` is absent.
 *
 * ```ts
 * import { createNativeEngine } from "./mod.ts";
 * const engine = createNativeEngine({ config, head: { task: "pretrain" }, seed: 1, maxBatch: 32, maxSeqLen: 128 });
 * const stats = engine.trainStep(batch); // forward, backward, AdamW every gradAccumSteps micro-batches
 * ```
 *
 * Options beyond EngineOptions: `maxBatch` (default 32) and `maxSeqLen` (default 128, capped at
 * max_position_embeddings) size the activation arena: a batch with B*T above maxBatch*maxSeqLen tokens or T
 * above maxSeqLen is an InvalidArgument naming both numbers. `kernels: "ts"` forces the TypeScript kernels.
 *
 * Environment: BERTFORGE_THREADS (default all cores), BERTFORGE_KERNELS (kernel library path), BERTFORGE_BLAS
 * (BLAS library path), BERTFORGE_BLAS_CORETYPE (`keep` to respect OPENBLAS_CORETYPE; by default AVX-512 CPUs
 * get OpenBLAS's SkylakeX kernels), BERTFORGE_PROFILE=0 (no per-kernel timing; `profile()` otherwise returns
 * ms per kernel since its last call).
 *
 * Throws Unavailable when no BLAS library loads (the backend selector then falls back to TensorFlow.js).
 */
import type { Engine } from "../engine.ts";
import { NativeEngine, type NativeEngineOptions } from "./native_engine.ts";

export { NativeEngine, type NativeEngineOptions } from "./native_engine.ts";
export { loadBlas } from "./blas_ffi.ts";
export { loadCKernels, loadKernels, tsKernels } from "./kernels.ts";

export function createNativeEngine(options: NativeEngineOptions): Engine {
  return new NativeEngine(options);
}

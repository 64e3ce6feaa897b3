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

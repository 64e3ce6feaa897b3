/**
 * OpenBLAS (Accelerate on macOS) through Deno FFI: the only GEMM the native engine uses.
 *
 * Matrices are passed as raw addresses (numbers) rather than TypedArrays so that the per-head attention GEMMs,
 * which point into the middle of arena buffers with row strides, need no subarray objects per call. The
 * arena's ArrayBuffer backing store is off-heap and never moves, so an address taken once stays valid for as
 * long as the engine holds the arena.
 */
import { Unavailable } from "../../errors.ts";

/** An environment variable, or undefined where env access is not permitted (the engine then uses defaults). */
export function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

export function setEnv(name: string, value: string): void {
  try {
    Deno.env.set(name, value);
  } catch {
    // without --allow-env the library's own default applies
  }
}

const CBLAS_ROW_MAJOR = 101;
const CBLAS_NO_TRANS = 111;
const CBLAS_TRANS = 112;

const SYMBOLS = {
  cblas_sgemm: {
    parameters: [
      "i32", // order
      "i32", // transA
      "i32", // transB
      "i32", // M
      "i32", // N
      "i32", // K
      "f32", // alpha
      "usize", // A
      "i32", // lda
      "usize", // B
      "i32", // ldb
      "f32", // beta
      "usize", // C
      "i32", // ldc
    ],
    result: "void",
  },
} as const;

const THREAD_SYMBOLS = {
  openblas_set_num_threads: { parameters: ["i32"], result: "void" },
  openblas_get_num_threads: { parameters: [], result: "i32" },
} as const;

/** Candidate library names, most specific first. */
function candidates(): string[] {
  const fromEnv = env("BERTFORGE_BLAS");
  const list = fromEnv ? [fromEnv] : [];
  if (Deno.build.os === "darwin") {
    list.push(
      "/System/Library/Frameworks/Accelerate.framework/Accelerate",
      "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
      "/usr/local/opt/openblas/lib/libopenblas.dylib",
    );
  } else {
    list.push(
      "libopenblas.so.0",
      "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
      "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
      "libopenblas.so",
    );
  }
  return list;
}

export interface Blas {
  readonly library: string;
  /** OPENBLAS_CORETYPE in effect when the library loaded (undefined: OpenBLAS's own detection). */
  readonly coreType: string | undefined;
  /**
   * Row-major C (M,N) = alpha * op(A) op(B) + beta * C on raw addresses; op(A) is (M,K), op(B) is (K,N).
   * `transA`/`transB` mean the stored matrix is the transpose (A stored (K,M) with row stride lda).
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    a: number,
    lda: number,
    b: number,
    ldb: number,
    beta: number,
    c: number,
    ldc: number,
  ): void;
  setThreads(n: number): void;
  close(): void;
}

let cached: Blas | undefined;

/**
 * OpenBLAS picks its kernels from OPENBLAS_CORETYPE (read when the library loads). Debian's 0.3.21 does not know
 * AVX-512 AMD cores and environments often pin `Haswell` (AVX2); on a CPU with AVX-512 the SkylakeX kernels
 * run our GEMMs 1.5-2x faster, so the engine asks for them unless BERTFORGE_BLAS_CORETYPE says otherwise
 * (`keep` leaves OPENBLAS_CORETYPE alone; any other value is used as the core type).
 */
export function chooseBlasCoreType(): string | undefined {
  const requested = env("BERTFORGE_BLAS_CORETYPE");
  if (requested === "keep") return env("OPENBLAS_CORETYPE");
  if (requested) {
    setEnv("OPENBLAS_CORETYPE", requested);
    return requested;
  }
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") return env("OPENBLAS_CORETYPE");
  try {
    const flags = Deno.readTextFileSync("/proc/cpuinfo").match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
    if (["avx512f", "avx512dq", "avx512bw", "avx512vl"].every((f) => flags.includes(f))) {
      setEnv("OPENBLAS_CORETYPE", "SkylakeX");
    }
  } catch {
    // no /proc: keep whatever OpenBLAS detects
  }
  return env("OPENBLAS_CORETYPE");
}

/** Loads OpenBLAS once per process; throws Unavailable naming every path tried when none loads. */
export function loadBlas(): Blas {
  if (cached) return cached;
  const errors: string[] = [];
  const coreType = chooseBlasCoreType();
  for (const path of candidates()) {
    let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      lib = Deno.dlopen(path, SYMBOLS);
    } catch (e) {
      errors.push(`${path}: ${(e as Error).message}`);
      continue;
    }
    let threads: Deno.DynamicLibrary<typeof THREAD_SYMBOLS> | undefined;
    try {
      threads = Deno.dlopen(path, THREAD_SYMBOLS);
    } catch {
      threads = undefined; // Accelerate has no thread control; it sizes itself
    }
    // usize parameters take plain numbers at run time (addresses < 2^53); the declared type says bigint
    const gemm = lib.symbols.cblas_sgemm as unknown as (...args: number[]) => void;
    cached = {
      library: path,
      coreType,
      sgemm(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc) {
        if (M === 0 || N === 0) return;
        gemm(
          CBLAS_ROW_MAJOR,
          transA ? CBLAS_TRANS : CBLAS_NO_TRANS,
          transB ? CBLAS_TRANS : CBLAS_NO_TRANS,
          M,
          N,
          K,
          alpha,
          a,
          lda,
          b,
          ldb,
          beta,
          c,
          ldc,
        );
      },
      setThreads(n: number) {
        threads?.symbols.openblas_set_num_threads(Math.max(1, n));
      },
      close() {
        threads?.close();
        lib.close();
        cached = undefined;
      },
    };
    return cached;
  }
  throw new Unavailable(
    `native engine: cannot load a BLAS library (install libopenblas0-pthread, or set BERTFORGE_BLAS): ${
      errors.join("; ")
    }`,
  );
}

/** The address of a TypedArray view's first element, as a number the FFI `usize` parameters accept. */
export function addressOf(view: ArrayBufferView): number {
  const ptr = Deno.UnsafePointer.of(view as unknown as BufferSource);
  return Number(Deno.UnsafePointer.value(ptr));
}

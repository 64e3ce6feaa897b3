/**
 * The native engine's non-GEMM kernels behind one interface, in two implementations:
 * - `c`: kernels/kernels.c compiled by `make kernels` (OpenMP), loaded from BERTFORGE_KERNELS through FFI;
 * - `ts`: the same functions in TypeScript, the fallback when the library is absent (and the reference the
 *   C kernels are tested against).
 * The semantics of each function are documented once, in kernels.c.
 *
 * Letters: B batch, T sequence length, C channels, NH heads, N rows, D row width, V vocab, M gathered rows.
 */

import { env, setEnv } from "./blas_ffi.ts";

export interface Kernels {
  readonly impl: "c" | "ts";
  setThreads(n: number): void;
  dropout(out: Float32Array, inp: Float32Array, n: number, p: number, seed: number, offset: number): void;
  residualDropout(
    out: Float32Array,
    inp: Float32Array,
    bias: Float32Array,
    residual: Float32Array,
    N: number,
    D: number,
    p: number,
    seed: number,
    offset: number,
  ): void;
  embedFwd(
    out: Float32Array,
    ids: Int32Array,
    types: Int32Array,
    wte: Float32Array,
    wpe: Float32Array,
    wtt: Float32Array,
    B: number,
    T: number,
    C: number,
  ): void;
  embedBwd(
    dwte: Float32Array,
    dwpe: Float32Array,
    dwtt: Float32Array,
    dout: Float32Array,
    ids: Int32Array,
    types: Int32Array,
    B: number,
    T: number,
    C: number,
    padId: number,
  ): void;
  gatherRows(out: Float32Array, inp: Float32Array, idx: Int32Array, M: number, C: number): void;
  scatterAddRows(dinp: Float32Array, dout: Float32Array, idx: Int32Array, M: number, C: number): void;
  layernormFwd(
    out: Float32Array,
    mean: Float32Array,
    rstd: Float32Array,
    inp: Float32Array,
    w: Float32Array,
    b: Float32Array,
    N: number,
    C: number,
    eps: number,
  ): void;
  layernormBwd(
    dinp: Float32Array,
    dw: Float32Array,
    db: Float32Array,
    dout: Float32Array,
    inp: Float32Array,
    mean: Float32Array,
    rstd: Float32Array,
    w: Float32Array,
    N: number,
    C: number,
  ): void;
  biasAdd(out: Float32Array, bias: Float32Array, N: number, D: number): void;
  biasGrad(dbias: Float32Array, dout: Float32Array, N: number, D: number): void;
  geluFwd(out: Float32Array, inp: Float32Array, n: number): void;
  biasGeluFwd(h: Float32Array, g: Float32Array, bias: Float32Array, N: number, D: number): void;
  geluBwd(dinp: Float32Array, inp: Float32Array, dout: Float32Array, n: number): void;
  softmaxFwd(att: Float32Array, addmask: Float32Array, B: number, NH: number, T: number, scale: number): void;
  softmaxBwd(
    dscores: Float32Array,
    dprobs: Float32Array,
    probs: Float32Array,
    rows: number,
    T: number,
    scale: number,
  ): void;
  softmaxDropoutBwd(
    dscores: Float32Array,
    dprobsDropped: Float32Array,
    probs: Float32Array,
    probsDropped: Float32Array,
    rows: number,
    T: number,
    scale: number,
    dropScale: number,
  ): void;
  softmaxCe(
    logits: Float32Array,
    bias: Float32Array | null,
    labels: Int32Array,
    losses: Float32Array,
    preds: Float32Array,
    N: number,
    V: number,
    gradScale: number,
    wantGrad: boolean,
  ): void;
  adamw(
    p: Float32Array,
    g: Float32Array,
    m: Float32Array,
    v: Float32Array,
    n: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    wd: number,
    bc1: number,
    bc2: number,
    gradScale: number,
  ): void;
  sumsq(x: Float32Array, n: number): number;
  fill(x: Float32Array, n: number, value: number): void;
  /**
   * C only: the per-head attention GEMMs as one call, heads in parallel with single-threaded OpenBLAS inside.
   * Addresses are raw (like Blas.sgemm); strides are in elements; available after attachBlas succeeds.
   */
  batchedSgemm?: BatchedSgemm;
  /** C only: lets the kernel library call the BLAS library at `path` (the one blas_ffi.ts loaded). */
  attachBlas?(path: string): boolean;
}

export type BatchedSgemm = (
  transA: boolean,
  transB: boolean,
  M: number,
  N: number,
  K: number,
  a: number,
  lda: number,
  strideAb: number,
  strideAh: number,
  b: number,
  ldb: number,
  strideBb: number,
  strideBh: number,
  beta: number,
  c: number,
  ldc: number,
  strideCb: number,
  strideCh: number,
  nb: number,
  nh: number,
  blasThreads: number,
) => void;

// ------------------------------------------------------------------------------------------ dropout hash

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b | 0);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The uniform 32-bit draw for counter c of stream `seed` (the same function as draw32 in kernels.c). */
export function draw32(seed: number, c: number): number {
  const hi = Math.floor(c / 4294967296);
  const key = mix32((seed ^ mix32((hi + 0x9e3779b9) >>> 0)) >>> 0);
  return mix32((mix32(((c >>> 0) ^ key) >>> 0) + key) >>> 0);
}

function keepThreshold(p: number): number {
  return Math.floor(Math.fround(p) * 4294967296);
}

// ------------------------------------------------------------------------------------------ erf

/** erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): enough for float32 GELU. */
export function erf(x: number): number {
  const sign = x < 0 ? -1 : 1;
  const z = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * z);
  const y = 1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t *
      Math.exp(-z * z);
  return sign * y;
}

const INV_SQRT2 = 0.7071067811865476;
const INV_SQRT_2PI = 0.3989422804014327;
/** Phi(x) with the same A&S formula as kernels.c (one exp shared with the density). */
function normalCdf(x: number): number {
  return 0.5 * (1 + erf(x * INV_SQRT2));
}
const gelu = (x: number) => x * normalCdf(x);
const geluGrad = (x: number) => normalCdf(x) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);

// ------------------------------------------------------------------------------------------ TypeScript

export const tsKernels: Kernels = {
  impl: "ts",
  setThreads() {},
  dropout(out, inp, n, p, seed, offset) {
    if (p <= 0) {
      if (out !== inp) out.set(inp.subarray(0, n));
      return;
    }
    const thresh = keepThreshold(p);
    const scale = Math.fround(1 / Math.fround(1 - Math.fround(p)));
    for (let i = 0; i < n; i++) out[i] = draw32(seed, offset + i) >= thresh ? inp[i] * scale : 0;
  },
  residualDropout(out, inp, bias, residual, N, D, p, seed, offset) {
    const thresh = keepThreshold(p);
    const scale = p > 0 ? Math.fround(1 / Math.fround(1 - Math.fround(p))) : 1;
    for (let r = 0; r < N; r++) {
      for (let j = 0; j < D; j++) {
        const i = r * D + j;
        let v = Math.fround(inp[i] + bias[j]);
        if (p > 0) v = draw32(seed, offset + i) >= thresh ? v * scale : 0;
        out[i] = residual[i] + Math.fround(v);
      }
    }
  },
  embedFwd(out, ids, types, wte, wpe, wtt, B, T, C) {
    for (let bt = 0; bt < B * T; bt++) {
      const we = ids[bt] * C, pe = (bt % T) * C, te = types[bt] * C, o = bt * C;
      for (let c = 0; c < C; c++) out[o + c] = Math.fround(wte[we + c] + wpe[pe + c]) + wtt[te + c];
    }
  },
  embedBwd(dwte, dwpe, dwtt, dout, ids, types, B, T, C, padId) {
    for (let bt = 0; bt < B * T; bt++) {
      const g = bt * C, pe = (bt % T) * C, te = types[bt] * C;
      for (let c = 0; c < C; c++) {
        dwpe[pe + c] += dout[g + c];
        dwtt[te + c] += dout[g + c];
      }
      if (ids[bt] !== padId) {
        const we = ids[bt] * C;
        for (let c = 0; c < C; c++) dwte[we + c] += dout[g + c];
      }
    }
  },
  gatherRows(out, inp, idx, M, C) {
    for (let m = 0; m < M; m++) out.set(inp.subarray(idx[m] * C, idx[m] * C + C), m * C);
  },
  scatterAddRows(dinp, dout, idx, M, C) {
    for (let m = 0; m < M; m++) {
      const d = idx[m] * C, g = m * C;
      for (let c = 0; c < C; c++) dinp[d + c] += dout[g + c];
    }
  },
  layernormFwd(out, mean, rstd, inp, w, b, N, C, eps) {
    for (let r = 0; r < N; r++) {
      const x = r * C;
      let m = 0;
      for (let c = 0; c < C; c++) m += inp[x + c];
      m /= C;
      let v = 0;
      for (let c = 0; c < C; c++) v += (inp[x + c] - m) ** 2;
      v /= C;
      const s = 1 / Math.sqrt(v + eps);
      for (let c = 0; c < C; c++) out[x + c] = (inp[x + c] - m) * s * w[c] + b[c];
      mean[r] = m;
      rstd[r] = s;
    }
  },
  layernormBwd(dinp, dw, db, dout, inp, mean, rstd, w, N, C) {
    for (let r = 0; r < N; r++) {
      const x = r * C, m = mean[r], s = rstd[r];
      let dnMean = 0, dnNormMean = 0;
      for (let c = 0; c < C; c++) {
        const xhat = (inp[x + c] - m) * s;
        const dn = dout[x + c] * w[c];
        dw[c] += dout[x + c] * xhat;
        db[c] += dout[x + c];
        dnMean += dn;
        dnNormMean += dn * xhat;
      }
      dnMean /= C;
      dnNormMean /= C;
      for (let c = 0; c < C; c++) {
        const xhat = (inp[x + c] - m) * s;
        dinp[x + c] = s * (dout[x + c] * w[c] - dnMean - xhat * dnNormMean);
      }
    }
  },
  biasAdd(out, bias, N, D) {
    for (let r = 0; r < N; r++) for (let j = 0; j < D; j++) out[r * D + j] += bias[j];
  },
  biasGrad(dbias, dout, N, D) {
    for (let r = 0; r < N; r++) for (let j = 0; j < D; j++) dbias[j] += dout[r * D + j];
  },
  geluFwd(out, inp, n) {
    for (let i = 0; i < n; i++) out[i] = gelu(inp[i]);
  },
  biasGeluFwd(h, g, bias, N, D) {
    for (let r = 0; r < N; r++) {
      for (let j = 0; j < D; j++) {
        const x = Math.fround(h[r * D + j] + bias[j]);
        h[r * D + j] = x;
        g[r * D + j] = gelu(x);
      }
    }
  },
  geluBwd(dinp, inp, dout, n) {
    for (let i = 0; i < n; i++) dinp[i] = dout[i] * geluGrad(inp[i]);
  },
  softmaxFwd(att, addmask, B, NH, T, scale) {
    for (let r = 0; r < B * NH * T; r++) {
      const am = Math.floor(r / (NH * T)) * T, x = r * T;
      let mx = -Infinity;
      for (let j = 0; j < T; j++) {
        const v = Math.fround(Math.fround(att[x + j] * scale) + addmask[am + j]);
        att[x + j] = v;
        if (v > mx) mx = v;
      }
      let sum = 0;
      for (let j = 0; j < T; j++) {
        const e = Math.exp(att[x + j] - mx);
        att[x + j] = e;
        sum += e;
      }
      for (let j = 0; j < T; j++) att[x + j] /= sum;
    }
  },
  softmaxBwd(dscores, dprobs, probs, rows, T, scale) {
    for (let r = 0; r < rows; r++) {
      const x = r * T;
      let dot = 0;
      for (let j = 0; j < T; j++) dot += dprobs[x + j] * probs[x + j];
      for (let j = 0; j < T; j++) dscores[x + j] = scale * probs[x + j] * (dprobs[x + j] - dot);
    }
  },
  softmaxDropoutBwd(dscores, dprobsDropped, probs, probsDropped, rows, T, scale, dropScale) {
    const ds = Math.fround(dropScale);
    for (let r = 0; r < rows; r++) {
      const x = r * T;
      let dot = 0;
      for (let j = 0; j < T; j++) {
        dot += (probsDropped[x + j] !== 0 ? dprobsDropped[x + j] * ds : 0) * probs[x + j];
      }
      for (let j = 0; j < T; j++) {
        const dp = probsDropped[x + j] !== 0 ? dprobsDropped[x + j] * ds : 0;
        dscores[x + j] = scale * probs[x + j] * (dp - dot);
      }
    }
  },
  softmaxCe(logits, bias, labels, losses, preds, N, V, gradScale, wantGrad) {
    for (let r = 0; r < N; r++) {
      const x = r * V, y = labels[r];
      if (bias) { for (let j = 0; j < V; j++) logits[x + j] += bias[j]; }
      let mx = logits[x], arg = 0;
      for (let j = 1; j < V; j++) {
        if (logits[x + j] > mx) {
          mx = logits[x + j];
          arg = j;
        }
      }
      preds[r] = arg;
      if (y < 0) {
        losses[r] = 0;
        if (wantGrad) logits.fill(0, x, x + V);
        continue;
      }
      let sum = 0;
      for (let j = 0; j < V; j++) sum += Math.exp(logits[x + j] - mx);
      losses[r] = mx + Math.log(sum) - logits[x + y];
      if (wantGrad) {
        for (let j = 0; j < V; j++) logits[x + j] = gradScale * (Math.exp(logits[x + j] - mx) / sum);
        logits[x + y] -= gradScale;
      }
    }
  },
  adamw(p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2, gradScale) {
    const decay = 1 - lr * wd, step = lr / bc1, rbc2 = 1 / Math.sqrt(bc2);
    for (let i = 0; i < n; i++) {
      const gi = g[i] * gradScale;
      const mi = beta1 * m[i] + (1 - beta1) * gi;
      const vi = beta2 * v[i] + (1 - beta2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * decay - step * m[i] / (Math.sqrt(v[i]) * rbc2 + eps);
    }
  },
  sumsq(x, n) {
    let s = 0;
    for (let i = 0; i < n; i++) s += x[i] * x[i];
    return s;
  },
  fill(x, n, value) {
    x.fill(value, 0, n);
  },
};

// ------------------------------------------------------------------------------------------ C via FFI

const C_SYMBOLS = {
  bf_version: { parameters: [], result: "i32" },
  bf_set_threads: { parameters: ["i32"], result: "void" },
  bf_dropout: { parameters: ["buffer", "buffer", "i32", "f32", "u32", "f64"], result: "void" },
  bf_residual_dropout: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "i32", "i32", "f32", "u32", "f64"],
    result: "void",
  },
  bf_embed_fwd: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "i32", "i32", "i32"],
    result: "void",
  },
  bf_embed_bwd: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "i32", "i32", "i32", "i32"],
    result: "void",
  },
  bf_gather_rows: { parameters: ["buffer", "buffer", "buffer", "i32", "i32"], result: "void" },
  bf_scatter_add_rows: { parameters: ["buffer", "buffer", "buffer", "i32", "i32"], result: "void" },
  bf_layernorm_fwd: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "i32", "i32", "f32"],
    result: "void",
  },
  bf_layernorm_bwd: {
    parameters: [
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "i32",
      "i32",
    ],
    result: "void",
  },
  bf_bias_add: { parameters: ["buffer", "buffer", "i32", "i32"], result: "void" },
  bf_bias_grad: { parameters: ["buffer", "buffer", "i32", "i32"], result: "void" },
  bf_gelu_fwd: { parameters: ["buffer", "buffer", "i32"], result: "void" },
  bf_bias_gelu_fwd: { parameters: ["buffer", "buffer", "buffer", "i32", "i32"], result: "void" },
  bf_gelu_bwd: { parameters: ["buffer", "buffer", "buffer", "i32"], result: "void" },
  bf_softmax_fwd: { parameters: ["buffer", "buffer", "i32", "i32", "i32", "f32"], result: "void" },
  bf_softmax_bwd: { parameters: ["buffer", "buffer", "buffer", "i32", "i32", "f32"], result: "void" },
  bf_softmax_dropout_bwd: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "i32", "i32", "f32", "f32"],
    result: "void",
  },
  bf_softmax_ce: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "i32", "i32", "f32", "i32"],
    result: "void",
  },
  bf_adamw: {
    parameters: [
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "i32",
      "f32",
      "f32",
      "f32",
      "f32",
      "f32",
      "f32",
      "f32",
      "f32",
    ],
    result: "void",
  },
  bf_sumsq: { parameters: ["buffer", "f64"], result: "f64" },
  bf_attach_blas: { parameters: ["buffer"], result: "i32" },
  bf_batched_sgemm: {
    parameters: [
      "i32", // transA
      "i32", // transB
      "i32", // M
      "i32", // N
      "i32", // K
      "f32", // alpha
      "usize", // A
      "i32", // lda
      "f64", // A stride per b
      "f64", // A stride per h
      "usize", // B
      "i32", // ldb
      "f64",
      "f64",
      "f32", // beta
      "usize", // C
      "i32", // ldc
      "f64",
      "f64",
      "i32", // nb
      "i32", // nh
      "i32", // OpenBLAS threads to restore
    ],
    result: "void",
  },
  bf_fill: { parameters: ["buffer", "f64", "f32"], result: "void" },
} as const;

/** bf_version() of the kernels.c this file matches. */
const KERNELS_ABI = 3;

let cLoaded: { kernels: Kernels; path: string } | null | undefined;

/** Path of the compiled kernel library: $BERTFORGE_KERNELS, else build/libbertforge_kernels.so of this checkout. */
export function kernelLibraryPath(): string {
  const fromEnv = env("BERTFORGE_KERNELS");
  if (fromEnv) return fromEnv;
  const ext = Deno.build.os === "darwin" ? "dylib" : "so";
  return new URL(`../../../../build/libbertforge_kernels.${ext}`, import.meta.url).pathname;
}

/** The C kernels when the library loads, else null (callers fall back to tsKernels). */
export function loadCKernels(): Kernels | null {
  if (cLoaded !== undefined) return cLoaded?.kernels ?? null;
  const path = kernelLibraryPath();
  // OpenMP threads that spin after a kernel would steal the cores OpenBLAS needs for the next GEMM
  if (!env("OMP_WAIT_POLICY")) setEnv("OMP_WAIT_POLICY", "PASSIVE");
  let lib: Deno.DynamicLibrary<typeof C_SYMBOLS>;
  try {
    lib = Deno.dlopen(path, C_SYMBOLS);
  } catch (e) {
    // absent is the documented fallback; present but unloadable (stale, wrong arch) deserves a word
    let present = false;
    try {
      present = Deno.statSync(path).isFile;
    } catch {
      present = false;
    }
    if (present) {
      console.warn(`native engine: cannot load ${path} (${(e as Error).message}); using TypeScript kernels`);
    }
    cLoaded = null;
    return null;
  }
  const s = lib.symbols;
  if (s.bf_version() !== KERNELS_ABI) {
    console.warn(
      `native engine: ${path} is a stale build (ABI ${s.bf_version()}, expected ${KERNELS_ABI}); ` +
        "using the TypeScript kernels until `make kernels` rebuilds it",
    );
    lib.close();
    cLoaded = null;
    return null;
  }
  const kernels: Kernels = {
    impl: "c",
    setThreads: (n) => s.bf_set_threads(n),
    dropout: (out, inp, n, p, seed, offset) => s.bf_dropout(out, inp, n, p, seed >>> 0, offset),
    residualDropout: (out, inp, bias, residual, N, D, p, seed, offset) =>
      s.bf_residual_dropout(out, inp, bias, residual, N, D, p, seed >>> 0, offset),
    embedFwd: (out, ids, types, wte, wpe, wtt, B, T, C) =>
      s.bf_embed_fwd(out, ids, types, wte, wpe, wtt, B, T, C),
    embedBwd: (dwte, dwpe, dwtt, dout, ids, types, B, T, C, padId) =>
      s.bf_embed_bwd(dwte, dwpe, dwtt, dout, ids, types, B, T, C, padId),
    gatherRows: (out, inp, idx, M, C) => s.bf_gather_rows(out, inp, idx, M, C),
    scatterAddRows: (dinp, dout, idx, M, C) => s.bf_scatter_add_rows(dinp, dout, idx, M, C),
    layernormFwd: (out, mean, rstd, inp, w, b, N, C, eps) =>
      s.bf_layernorm_fwd(out, mean, rstd, inp, w, b, N, C, eps),
    layernormBwd: (dinp, dw, db, dout, inp, mean, rstd, w, N, C) =>
      s.bf_layernorm_bwd(dinp, dw, db, dout, inp, mean, rstd, w, N, C),
    biasAdd: (out, bias, N, D) => s.bf_bias_add(out, bias, N, D),
    biasGrad: (dbias, dout, N, D) => s.bf_bias_grad(dbias, dout, N, D),
    geluFwd: (out, inp, n) => s.bf_gelu_fwd(out, inp, n),
    biasGeluFwd: (h, g, bias, N, D) => s.bf_bias_gelu_fwd(h, g, bias, N, D),
    geluBwd: (dinp, inp, dout, n) => s.bf_gelu_bwd(dinp, inp, dout, n),
    softmaxFwd: (att, addmask, B, NH, T, scale) => s.bf_softmax_fwd(att, addmask, B, NH, T, scale),
    softmaxBwd: (dscores, dprobs, probs, rows, T, scale) =>
      s.bf_softmax_bwd(dscores, dprobs, probs, rows, T, scale),
    softmaxDropoutBwd: (dscores, dprobsDropped, probs, probsDropped, rows, T, scale, dropScale) =>
      s.bf_softmax_dropout_bwd(dscores, dprobsDropped, probs, probsDropped, rows, T, scale, dropScale),
    softmaxCe: (logits, bias, labels, losses, preds, N, V, gradScale, wantGrad) =>
      s.bf_softmax_ce(logits, bias, labels, losses, preds, N, V, gradScale, wantGrad ? 1 : 0),
    adamw: (p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2, gradScale) =>
      s.bf_adamw(p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2, gradScale),
    sumsq: (x, n) => s.bf_sumsq(x, n) as number,
    fill: (x, n, value) => s.bf_fill(x, n, value),
    attachBlas(path: string): boolean {
      if (s.bf_attach_blas(new TextEncoder().encode(path + "\0")) !== 1) return false;
      // usize parameters take plain numbers at run time; the declared type says bigint
      const batched = s.bf_batched_sgemm as unknown as (...args: number[]) => void;
      kernels.batchedSgemm = (
        tA,
        tB,
        M,
        N,
        K,
        a,
        lda,
        sAb,
        sAh,
        b,
        ldb,
        sBb,
        sBh,
        beta,
        c,
        ldc,
        sCb,
        sCh,
        nb,
        nh,
        th,
      ) =>
        batched(
          tA ? 1 : 0,
          tB ? 1 : 0,
          M,
          N,
          K,
          1,
          a,
          lda,
          sAb,
          sAh,
          b,
          ldb,
          sBb,
          sBh,
          beta,
          c,
          ldc,
          sCb,
          sCh,
          nb,
          nh,
          th,
        );
      return true;
    },
  };
  cLoaded = { kernels, path };
  return kernels;
}

/** C kernels when available, else the TypeScript ones; `prefer: "ts"` forces the fallback (tests). */
export function loadKernels(prefer?: "c" | "ts"): Kernels {
  if (prefer === "ts") return tsKernels;
  return loadCKernels() ?? tsKernels;
}

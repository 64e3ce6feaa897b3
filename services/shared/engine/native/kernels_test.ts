/**
 * Kernels: each backward against central differences of its forward (TypeScript kernels, odd sizes), and the
 * C library against the TypeScript twin on the same inputs.
 */
import { assert, assertEquals } from "@std/assert";
import { type Kernels, loadCKernels, tsKernels } from "./kernels.ts";
import { crfDecode, crfLoss } from "./crf.ts";

function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return ((s / 4294967296) * 2 - 1) * scale;
  });
}

/** Checks d(sum(out * r))/d(x[i]) for a few i against backward's dx. */
function checkGrad(
  name: string,
  x: Float32Array,
  forward: () => number,
  analytic: Float32Array,
  eps = 1e-2,
): void {
  const picks = [0, 1, Math.floor(x.length / 3), Math.floor(x.length / 2), x.length - 1];
  for (const i of picks) {
    const keep = x[i];
    x[i] = keep + eps;
    const plus = forward();
    x[i] = keep - eps;
    const minus = forward();
    x[i] = keep;
    const numeric = (plus - minus) / (2 * eps);
    const tol = 0.02 * Math.abs(numeric) + 2e-3;
    assert(
      Math.abs(numeric - analytic[i]) <= tol,
      `${name}[${i}]: numeric ${numeric} analytic ${analytic[i]}`,
    );
  }
}

const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i], 0);
const k = tsKernels;

Deno.test("layernorm backward matches finite differences (input, weight, bias)", () => {
  const N = 3, C = 13;
  const x = rand(N * C, 1, 2), w = rand(C, 2), b = rand(C, 3), r = rand(N * C, 4);
  const out = new Float32Array(N * C), mean = new Float32Array(N), rstd = new Float32Array(N);
  const f = () => (k.layernormFwd(out, mean, rstd, x, w, b, N, C, 1e-5), dot(out, r));
  f();
  const dx = new Float32Array(N * C), dw = new Float32Array(C), db = new Float32Array(C);
  k.layernormBwd(dx, dw, db, r, x, mean, rstd, w, N, C);
  checkGrad("layernorm dx", x, f, dx);
  checkGrad("layernorm dw", w, f, dw);
  checkGrad("layernorm db", b, f, db);
});

Deno.test("gelu and bias+gelu backward match finite differences", () => {
  const n = 29;
  const x = rand(n, 5, 3), r = rand(n, 6), out = new Float32Array(n);
  const f = () => (k.geluFwd(out, x, n), dot(out, r));
  const dx = new Float32Array(n);
  k.geluBwd(dx, x, r, n);
  checkGrad("gelu", x, f, dx);
  // gelu(0) = 0, gelu(x) ~ x for large x, and erf-exact at 1: 0.8413447
  k.geluFwd(out, new Float32Array([0, 8, 1]), 3);
  assert(Math.abs(out[0]) < 1e-7 && Math.abs(out[1] - 8) < 1e-5 && Math.abs(out[2] - 0.8413447) < 1e-6);
});

Deno.test("masked softmax backward matches finite differences; padding gets zero probability", () => {
  const B = 2, NH = 3, T = 5, scale = 0.37;
  const s = rand(B * NH * T * T, 7, 2), r = rand(B * NH * T * T, 8);
  const mask = new Float32Array(B * T);
  mask[B * T - 1] = -3.4028234663852886e38;
  const p = new Float32Array(s.length);
  const f = () => (p.set(s), k.softmaxFwd(p, mask, B, NH, T, scale), dot(p, r));
  f();
  assertEquals(p[B * NH * T * T - 1], 0);
  const ds = new Float32Array(s.length);
  k.softmaxBwd(ds, r, p, B * NH * T, T, scale);
  checkGrad("softmax", s, f, ds);
});

Deno.test("softmax cross-entropy gradient matches finite differences; ignored rows give nothing", () => {
  const N = 4, V = 11;
  const x = rand(N * V, 9, 3), labels = new Int32Array([3, -100, 0, 10]);
  const losses = new Float32Array(N), preds = new Float32Array(N);
  const f = () => {
    const tmp = Float32Array.from(x);
    k.softmaxCe(tmp, null, labels, losses, preds, N, V, 1, false);
    return losses.reduce((a, b) => a + b, 0);
  };
  const g = Float32Array.from(x);
  k.softmaxCe(g, null, labels, losses, preds, N, V, 1, true);
  checkGrad("softmax_ce", x, f, g);
  assertEquals(losses[1], 0);
  assert(g.subarray(V, 2 * V).every((v) => v === 0));
});

Deno.test("embedding backward is the transpose of the gather and skips the padding id", () => {
  const B = 2, T = 3, C = 5, Vs = 7;
  const ids = new Int32Array([1, 0, 6, 6, 2, 0]), types = new Int32Array([0, 0, 1, 1, 1, 0]);
  const wte = rand(Vs * C, 10), wpe = rand(T * C, 11), wtt = rand(2 * C, 12), r = rand(B * T * C, 13);
  const out = new Float32Array(B * T * C);
  const f = () => (k.embedFwd(out, ids, types, wte, wpe, wtt, B, T, C), dot(out, r));
  const dwte = new Float32Array(Vs * C), dwpe = new Float32Array(T * C), dwtt = new Float32Array(2 * C);
  k.embedBwd(dwte, dwpe, dwtt, r, ids, types, B, T, C, 0);
  checkGrad("dwte", wte.subarray(C), f, dwte.subarray(C));
  checkGrad("dwpe", wpe, f, dwpe);
  checkGrad("dwtt", wtt, f, dwtt);
  assert(dwte.subarray(0, C).every((v) => v === 0));
});

Deno.test("CRF loss gradient matches finite differences and Viterbi finds the best path", () => {
  const B = 2, T = 4, K = 3;
  const emit = rand(B * T * K, 14, 2);
  const p = { transitions: rand(K * K, 15), start: rand(K, 16), end: rand(K, 17) };
  const labels = new Int32Array([0, 2, -100, 1, 1, 0, -100, -100]);
  const mask = new Int32Array([1, 1, 1, 1, 1, 1, 0, 0]);
  const f = () => crfLoss(emit, labels, mask, B, T, K, p, 1, null, null);
  const dEmit = new Float32Array(B * T * K);
  const grads = {
    transitions: new Float32Array(K * K),
    start: new Float32Array(K),
    end: new Float32Array(K),
  };
  crfLoss(emit, labels, mask, B, T, K, p, 1, dEmit, grads);
  checkGrad("crf emissions", emit, f, dEmit, 1e-3);
  checkGrad("crf transitions", p.transitions, f, grads.transitions, 1e-3);
  checkGrad("crf start", p.start, f, grads.start, 1e-3);
  checkGrad("crf end", p.end, f, grads.end, 1e-3);
  // brute force over all K^4 paths of sequence 0
  let best = -Infinity, bestPath: number[] = [];
  for (let code = 0; code < K ** T; code++) {
    const path = [0, 1, 2, 3].map((t) => Math.floor(code / K ** t) % K);
    let s = p.start[path[0]] + p.end[path[T - 1]];
    for (let t = 0; t < T; t++) {
      s += emit[t * K + path[t]] + (t ? p.transitions[path[t - 1] * K + path[t]] : 0);
    }
    if (s > best) [best, bestPath] = [s, path];
  }
  const paths = new Int32Array(B * T);
  crfDecode(emit, mask, B, T, K, p, paths);
  assertEquals([...paths.subarray(0, T)], bestPath);
  assertEquals([...paths.subarray(T + 2)], [-1, -1]);
});

const c = loadCKernels();

Deno.test({
  name: "C kernels agree with the TypeScript kernels (1e-5)",
  ignore: c === null,
  fn() {
    const ck = c as Kernels;
    const close = (name: string, a: Float32Array, b: Float32Array, tol = 1e-5) => {
      let worst = 0;
      for (let i = 0; i < a.length; i++) {
        worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i])));
      }
      assert(worst <= tol, `${name}: worst relative difference ${worst}`);
    };
    const both = (name: string, n: number, run: (kk: Kernels, out: Float32Array) => void, tol?: number) => {
      const a = new Float32Array(n), b = new Float32Array(n);
      run(ck, a);
      run(tsKernels, b);
      close(name, a, b, tol);
    };
    const N = 37, C = 19, F = 23;
    const x = rand(N * C, 20, 2), w = rand(C, 21), bias = rand(C, 22), res = rand(N * C, 23);
    const h = rand(N * F, 24, 3);
    both("dropout", N * C, (kk, o) => kk.dropout(o, x, N * C, 0.3, 5, 2 ** 33 - 100));
    both("residual_dropout", N * C, (kk, o) => kk.residualDropout(o, x, bias, res, N, C, 0.2, 9, 77));
    both(
      "layernorm_fwd",
      N * C,
      (kk, o) => kk.layernormFwd(o, new Float32Array(N), new Float32Array(N), x, w, bias, N, C, 1e-12),
    );
    both("layernorm_bwd", N * C + 2 * C, (kk, o) => {
      const mean = new Float32Array(N), rstd = new Float32Array(N), y = new Float32Array(N * C);
      kk.layernormFwd(y, mean, rstd, x, w, bias, N, C, 1e-12);
      kk.layernormBwd(
        o.subarray(0, N * C),
        o.subarray(N * C, N * C + C),
        o.subarray(N * C + C),
        res,
        x,
        mean,
        rstd,
        w,
        N,
        C,
      );
    });
    both("gelu_fwd", N * F, (kk, o) => kk.geluFwd(o, h, N * F));
    both("gelu_bwd", N * F, (kk, o) => kk.geluBwd(o, h, h, N * F));
    both("bias_gelu", 2 * N * C, (kk, o) => {
      o.set(x);
      kk.biasGeluFwd(o.subarray(0, N * C), o.subarray(N * C), bias, N, C);
    });
    both("bias_grad", C, (kk, o) => kk.biasGrad(o, x, N, C));
    const Bs = 2, NH = 3, T = 9, am = new Float32Array(Bs * T);
    am[5] = -3.4028234663852886e38;
    const s = rand(Bs * NH * T * T, 25, 4);
    both("softmax_fwd", s.length, (kk, o) => (o.set(s), kk.softmaxFwd(o, am, Bs, NH, T, 0.3)));
    both(
      "softmax_bwd",
      s.length,
      (kk, o) => kk.softmaxBwd(o, x.subarray(0, s.length), s, Bs * NH * T, T, 0.3),
    );
    const sd = s.map((v, i) => (i % 3 === 0 ? 0 : v * 1.25)); // a third dropped, the rest scaled
    both("softmax_dropout_bwd", s.length, (kk, o) => {
      kk.softmaxDropoutBwd(o, x.subarray(0, s.length), s, sd, Bs * NH * T, T, 0.3, 1.25);
    });
    const Vv = 41, labels = Int32Array.from({ length: N }, (_, i) => (i % 4 === 1 ? -100 : (i * 7) % Vv));
    const logits = rand(N * Vv, 26, 5), decBias = rand(Vv, 31);
    both("softmax_ce", N * Vv + 2 * N, (kk, o) => {
      o.set(logits);
      kk.softmaxCe(
        o.subarray(0, N * Vv),
        decBias,
        labels,
        o.subarray(N * Vv, N * Vv + N),
        o.subarray(N * Vv + N),
        N,
        Vv,
        0.1,
        true,
      );
    });
    const ids = Int32Array.from({ length: 4 * 5 }, (_, i) => (i * 3) % 7), types = ids.map((v) => v % 2);
    const wte = rand(7 * C, 27), wpe = rand(5 * C, 28), wtt = rand(2 * C, 29);
    both("embed_fwd", 20 * C, (kk, o) => kk.embedFwd(o, ids, types, wte, wpe, wtt, 4, 5, C));
    both("embed_bwd", 14 * C, (kk, o) => {
      kk.embedBwd(
        o.subarray(0, 7 * C),
        o.subarray(7 * C, 12 * C),
        o.subarray(12 * C),
        x,
        ids,
        types,
        4,
        5,
        C,
        0,
      );
    });
    const idx = new Int32Array([4, 0, 9]);
    both("gather_scatter", 3 * C + N * C, (kk, o) => {
      kk.gatherRows(o.subarray(0, 3 * C), x, idx, 3, C);
      kk.scatterAddRows(o.subarray(3 * C), o.subarray(0, 3 * C), idx, 3, C);
    });
    both("adamw", 3 * N * C, (kk, o) => {
      const p = o.subarray(0, N * C), m = o.subarray(N * C, 2 * N * C), v = o.subarray(2 * N * C);
      p.set(x);
      for (let t = 1; t <= 3; t++) {
        kk.adamw(p, res, m, v, N * C, 1e-2, 0.9, 0.999, 1e-6, 0.01, 1 - 0.9 ** t, 1 - 0.999 ** t, 0.5);
      }
    });
    const big = rand(200003, 30);
    const sc = ck.sumsq(big, big.length), st = tsKernels.sumsq(big, big.length);
    assert(Math.abs(sc - st) / st < 1e-9, `sumsq ${sc} vs ${st}`);
  },
});

/**
 * Linear-chain CRF over token-classification emissions, in float64 (K is small, so this is never the hot path).
 * Weights follow pytorch-crf: transitions[i][j] scores tag i followed by tag j; start/end transitions score the
 * first and last tag.
 *
 * The chain of sequence b runs over its positions with attentionMask = 1 (a prefix: padding is on the right).
 * Positions labelled -100 inside the chain (specials, continuation pieces) are latent: the gold score is the
 * log-sum over every path that agrees with the labelled positions, so loss = logZ(all paths) - logZ(paths that
 * agree), averaged over the batch, and its gradient is the difference of the two posterior marginals.
 *
 * Letters: B batch, T sequence length, K tags.
 */

export interface CrfParams {
  transitions: Float32Array; // (K, K)
  start: Float32Array; // (K)
  end: Float32Array; // (K)
}

export interface CrfGrads {
  transitions: Float32Array; // (K, K), added into
  start: Float32Array; // (K), added into
  end: Float32Array; // (K), added into
}

function logSumExp(values: Float64Array, n: number): number {
  let mx = -Infinity;
  for (let i = 0; i < n; i++) if (values[i] > mx) mx = values[i];
  if (mx === -Infinity) return -Infinity;
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(values[i] - mx);
  return mx + Math.log(s);
}

/** Chain length of row b: its count of attended positions (at least 1 so every sequence has a path). */
export function chainLength(mask: Int32Array, b: number, T: number): number {
  let n = 0;
  for (let t = 0; t < T; t++) if (mask[b * T + t]) n = t + 1;
  return Math.max(1, n);
}

/**
 * Forward-backward on one sequence with an optional tag constraint (allowed(t, k)); adds `weight` times the
 * posterior marginals into dEmit (n, K) and the grads. Returns logZ of the constrained path set.
 */
function marginals(
  emit: Float32Array,
  eOff: number,
  n: number,
  K: number,
  p: CrfParams,
  allowed: (t: number, k: number) => boolean,
  weight: number,
  dEmit: Float32Array | null,
  grads: CrfGrads | null,
): number {
  const alpha = new Float64Array(n * K), beta = new Float64Array(n * K), tmp = new Float64Array(K);
  for (let k = 0; k < K; k++) alpha[k] = allowed(0, k) ? p.start[k] + emit[eOff + k] : -Infinity;
  for (let t = 1; t < n; t++) {
    for (let j = 0; j < K; j++) {
      if (!allowed(t, j)) {
        alpha[t * K + j] = -Infinity;
        continue;
      }
      for (let i = 0; i < K; i++) tmp[i] = alpha[(t - 1) * K + i] + p.transitions[i * K + j];
      alpha[t * K + j] = logSumExp(tmp, K) + emit[eOff + t * K + j];
    }
  }
  for (let k = 0; k < K; k++) tmp[k] = alpha[(n - 1) * K + k] + p.end[k];
  const logZ = logSumExp(tmp, K);
  if (!dEmit || !grads) return logZ;
  for (let k = 0; k < K; k++) beta[(n - 1) * K + k] = allowed(n - 1, k) ? p.end[k] : -Infinity;
  for (let t = n - 2; t >= 0; t--) {
    for (let i = 0; i < K; i++) {
      if (!allowed(t, i)) {
        beta[t * K + i] = -Infinity;
        continue;
      }
      for (let j = 0; j < K; j++) {
        tmp[j] = p.transitions[i * K + j] + emit[eOff + (t + 1) * K + j] + beta[(t + 1) * K + j];
      }
      beta[t * K + i] = logSumExp(tmp, K);
    }
  }
  for (let t = 0; t < n; t++) {
    for (let k = 0; k < K; k++) {
      const m = Math.exp(alpha[t * K + k] + beta[t * K + k] - logZ);
      dEmit[eOff + t * K + k] += weight * m;
      if (t === 0) grads.start[k] += weight * m;
      if (t === n - 1) grads.end[k] += weight * m;
    }
  }
  for (let t = 0; t + 1 < n; t++) {
    for (let i = 0; i < K; i++) {
      const a = alpha[t * K + i];
      if (a === -Infinity) continue;
      for (let j = 0; j < K; j++) {
        const pair = a + p.transitions[i * K + j] + emit[eOff + (t + 1) * K + j] + beta[(t + 1) * K + j] -
          logZ;
        grads.transitions[i * K + j] += weight * Math.exp(pair);
      }
    }
  }
  return logZ;
}

/**
 * Mean negative log-likelihood over the batch. With dEmit (B*T, K, overwritten) and grads (added into), also
 * the gradient of `scale * loss`.
 */
export function crfLoss(
  emit: Float32Array,
  labels: Int32Array,
  mask: Int32Array,
  B: number,
  T: number,
  K: number,
  p: CrfParams,
  scale: number,
  dEmit: Float32Array | null,
  grads: CrfGrads | null,
): number {
  if (dEmit) dEmit.fill(0, 0, B * T * K);
  let total = 0;
  for (let b = 0; b < B; b++) {
    const n = chainLength(mask, b, T);
    const off = b * T * K;
    const w = scale / B;
    const free = () => true;
    const gold = (t: number, k: number) => {
      const y = labels[b * T + t];
      return y < 0 || y === k;
    };
    const logZ = marginals(emit, off, n, K, p, free, w, dEmit, grads);
    const logGold = marginals(emit, off, n, K, p, gold, -w, dEmit, grads);
    total += logZ - logGold;
  }
  return total / B;
}

/** Viterbi best path per sequence into paths (B, T); -1 beyond each chain. */
export function crfDecode(
  emit: Float32Array,
  mask: Int32Array,
  B: number,
  T: number,
  K: number,
  p: CrfParams,
  paths: Int32Array,
): void {
  const score = new Float64Array(T * K);
  const back = new Int32Array(T * K);
  for (let b = 0; b < B; b++) {
    const n = chainLength(mask, b, T), off = b * T * K;
    for (let k = 0; k < K; k++) score[k] = p.start[k] + emit[off + k];
    for (let t = 1; t < n; t++) {
      for (let j = 0; j < K; j++) {
        let best = -Infinity, arg = 0;
        for (let i = 0; i < K; i++) {
          const s = score[(t - 1) * K + i] + p.transitions[i * K + j];
          if (s > best) {
            best = s;
            arg = i;
          }
        }
        score[t * K + j] = best + emit[off + t * K + j];
        back[t * K + j] = arg;
      }
    }
    let best = -Infinity, last = 0;
    for (let k = 0; k < K; k++) {
      const s = score[(n - 1) * K + k] + p.end[k];
      if (s > best) {
        best = s;
        last = k;
      }
    }
    paths.fill(-1, b * T, b * T + T);
    for (let t = n - 1; t >= 0; t--) {
      paths[b * T + t] = last;
      last = back[t * K + last];
    }
  }
}

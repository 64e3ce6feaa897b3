/**
 * Linear-chain CRF conventions shared by every backend (pytorch-crf tensor names and meaning):
 *   crf.start_transitions (K): score of starting at tag j
 *   crf.end_transitions   (K): score of ending at tag j
 *   crf.transitions    (K, K): score of moving from tag i (row) to tag j (column)
 *
 * The chain of a sequence runs over its positions with attentionMask = 1 (specials and continuation pieces
 * included), so training and inference see the same chain and inference needs no labels. Positions labelled
 * -100 are latent: the gold score is the log-sum over every path that agrees with the labelled positions, so a
 * sequence's loss is logZ(all paths) - logZ(paths agreeing with the labels), and the batch loss is its mean over
 * the B sequences. (The native engine's native/crf.ts and the PyTorch fixture implement the same definition.)
 */

/**
 * Viterbi best path per sequence. emissions (B, T, K) row-major; active (B, T) nonzero = on the chain
 * (the attention mask).
 * Returns (B, T) tag indices, -1 at inactive positions.
 */
export function viterbiDecode(
  emissions: Float32Array,
  active: ArrayLike<number>,
  B: number,
  T: number,
  K: number,
  start: Float32Array,
  end: Float32Array,
  transitions: Float32Array,
): Int32Array {
  const paths = new Int32Array(B * T).fill(-1);
  const score = new Float64Array(K);
  const next = new Float64Array(K);
  const backpointers = new Int32Array(T * K);
  const positions = new Int32Array(T);
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let t = 0; t < T; t++) if (active[b * T + t]) positions[n++] = t;
    if (n === 0) continue;
    const emit = (i: number, j: number) => emissions[(b * T + positions[i]!) * K + j]!;
    for (let j = 0; j < K; j++) score[j] = start[j]! + emit(0, j);
    for (let i = 1; i < n; i++) {
      for (let j = 0; j < K; j++) {
        let best = -Infinity, arg = 0;
        for (let from = 0; from < K; from++) {
          const s = score[from]! + transitions[from * K + j]!;
          if (s > best) (best = s), (arg = from);
        }
        next[j] = best + emit(i, j);
        backpointers[i * K + j] = arg;
      }
      score.set(next);
    }
    let best = -Infinity, tag = 0;
    for (let j = 0; j < K; j++) {
      const s = score[j]! + end[j]!;
      if (s > best) (best = s), (tag = j);
    }
    for (let i = n - 1; i >= 0; i--) {
      paths[b * T + positions[i]!] = tag;
      if (i > 0) tag = backpointers[i * K + tag]!;
    }
  }
  return paths;
}

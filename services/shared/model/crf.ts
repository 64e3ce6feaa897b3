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

/** A CRF head's tensors (pytorch-crf's start_transitions, end_transitions, transitions). */
export interface CrfParams {
  start: Float32Array;
  end: Float32Array;
  transitions: Float32Array;
}

/** The CRF tensors of a checkpoint, or undefined when it has none. */
export function crfParamsOf(weights: ReadonlyMap<string, { data: Float32Array }>): CrfParams | undefined {
  const start = weights.get("crf.start_transitions")?.data;
  const end = weights.get("crf.end_transitions")?.data;
  const transitions = weights.get("crf.transitions")?.data;
  return start && end && transitions ? { start, end, transitions } : undefined;
}

/**
 * One Viterbi path over a long sentence that ran as overlapping windows: `first` and `last` are the emissions
 * (K) of the first window's [CLS] and the last window's [SEP], `tokens` (n, K) the stitched emissions of the
 * sentence's own tokens. The chain is [CLS] tokens [SEP], as one pass over the whole sentence would have it, so
 * the tags agree across window seams (decoding each window alone can end one window on O and start the next on
 * I-). Returns the n token tags.
 */
export function viterbiAcrossWindows(
  first: ArrayLike<number>,
  tokens: Float32Array,
  last: ArrayLike<number>,
  K: number,
  crf: CrfParams,
): Int32Array {
  const n = tokens.length / K;
  const emissions = new Float32Array((n + 2) * K);
  emissions.set(first, 0);
  emissions.set(tokens, K);
  emissions.set(last, (n + 1) * K);
  const active = new Uint8Array(n + 2).fill(1);
  return viterbiDecode(emissions, active, 1, n + 2, K, crf.start, crf.end, crf.transitions).slice(1, n + 1);
}

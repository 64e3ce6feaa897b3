/**
 * Overlapping windows over a token sequence longer than the model takes, and the stitching of per-token
 * outputs back into one sequence: Hugging Face's `stride` / `return_overflowing_tokens` for token
 * classification. NER encoding (encode.ts), evaluation (services/trainer/evaluate.ts) and the Tag call
 * (services/inference/infer.ts) share these two functions, so a long sentence is cut and read back the same
 * way when it is trained on, scored and served.
 *
 * Positions count the sequence's own tokens, without [CLS]/[SEP]: each window is run as `[CLS] tokens [SEP]`.
 *
 * ```ts
 * const windows = tokenWindows(300, 126); // [0,126) [95,221) [174,300)
 * const tags = stitchWindows(windows, windows.map(runModel), 1, new Int32Array(300));
 * ```
 *
 * @module
 */

/** Tokens [start, end) of a sequence. */
export interface TokenSpan {
  start: number;
  end: number;
}

/**
 * The overlap of consecutive windows when none is given: a quarter of the budget. A token is read from the
 * window where it sits farthest from an edge, so near a seam it still has about overlap/2 tokens of context on
 * each side (15 at max_length 128), more than nearly all entities of People's Daily are long, while a
 * sentence of up to 1.75 budgets still takes only two windows.
 */
export function defaultStride(budget: number): number {
  return Math.floor(budget / 4);
}

/**
 * Windows of `budget` tokens covering `length` tokens, consecutive ones overlapping by at least `stride`: one
 * window [0, length) when it fits. The last window ends at `length` and is as long as the others, so it keeps
 * a full budget of context instead of a short tail.
 */
export function tokenWindows(length: number, budget: number, stride = defaultStride(budget)): TokenSpan[] {
  if (!Number.isInteger(budget) || budget < 1) {
    throw new RangeError(
      `Cannot cut windows as 'budget' must be a positive integer: current value is ${budget}`,
    );
  }
  if (!Number.isInteger(stride) || stride < 0 || stride >= budget) {
    throw new RangeError(
      `Cannot cut windows as 'stride' must be an integer in [0, ${
        budget - 1
      }] (below the budget ${budget}): current value is ${stride}`,
    );
  }
  if (length <= budget) return [{ start: 0, end: length }];
  const windows: TokenSpan[] = [];
  for (let start = 0; start + budget < length; start += budget - stride) {
    windows.push({ start, end: start + budget });
  }
  windows.push({ start: length - budget, end: length });
  return windows;
}

/** One window of `tokens` (a sequence without its specials) as a model pass: `[CLS] window [SEP]`, type ids 0. */
export function windowPass(
  tokens: readonly number[],
  { start, end }: TokenSpan,
  cls: number,
  sep: number,
): { ids: number[]; typeIds: number[] } {
  return {
    ids: [cls, ...tokens.slice(start, end), sep],
    typeIds: new Array<number>(end - start + 2).fill(0),
  };
}

/**
 * For each token of `[0, length)`, the index of the window where it has the most context: the most tokens
 * to the nearer of the window's two edges. An edge at the sequence's own start or end does not count (no
 * window sees past it). Ties go to the earlier window. `windows` must be sorted by start with increasing
 * ends (as tokenWindows gives them) and cover every token.
 */
export function centerMostWindows(windows: readonly TokenSpan[], length: number): Int32Array {
  const choice = new Int32Array(length);
  let first = 0;
  for (let t = 0; t < length; t++) {
    while (first < windows.length && windows[first]!.end <= t) first++;
    let best = -1, bestContext = -1;
    for (let w = first; w < windows.length && windows[w]!.start <= t; w++) {
      const { start, end } = windows[w]!;
      if (t >= end) continue;
      const left = start === 0 ? Infinity : t - start;
      const right = end === length ? Infinity : end - 1 - t;
      const context = Math.min(left, right);
      if (context > bestContext) {
        best = w;
        bestContext = context;
      }
    }
    if (best < 0) throw new RangeError(`Cannot stitch windows: token ${t} of ${length} is in none of them`);
    choice[t] = best;
  }
  return choice;
}

/**
 * Per-token rows of the windows stitched into one sequence: `rows[w]` holds `width` values for each token of
 * window w (`(end - start) * width`), and each token of the sequence takes its row from its center-most
 * window (centerMostWindows). Writes into `out`, `length * width` values, and returns it.
 */
export function stitchWindows<A extends Float32Array | Int32Array>(
  windows: readonly TokenSpan[],
  rows: readonly ArrayLike<number>[],
  width: number,
  out: A,
): A {
  if (rows.length !== windows.length) {
    throw new RangeError(`Cannot stitch ${rows.length} rows into ${windows.length} windows`);
  }
  windows.forEach(({ start, end }, w) => {
    if (rows[w]!.length !== (end - start) * width) {
      throw new RangeError(
        `Cannot stitch window ${w} [${start}, ${end}): it has ${rows[w]!.length} values, expected ${
          (end - start) * width
        }`,
      );
    }
  });
  const length = out.length / width;
  const choice = centerMostWindows(windows, length);
  for (let t = 0; t < length; t++) {
    const w = choice[t]!;
    const from = (t - windows[w]!.start) * width;
    for (let j = 0; j < width; j++) out[t * width + j] = rows[w]![from + j]!;
  }
  return out;
}

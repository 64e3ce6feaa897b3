/**
 * The CMRC 2018 official evaluation (cmrc2018_evaluate.py, v5), which DRCD results are reported with too:
 *
 * - Segmentation (`mixed_segmentation`): lower-cased and trimmed; each CJK character (U+4E00..U+9FA5) and each
 *   listed punctuation mark is a segment of its own; the runs between them (Latin words, digits, other
 *   symbols) are split into words as nltk's `word_tokenize` does. For F1 the listed punctuation is dropped.
 * - F1: the longest common *substring* (contiguous; the script's `find_lcs`) of the gold and predicted
 *   segments: precision = lcs / predicted, recall = lcs / gold; the best over the gold answers.
 * - EM: gold and prediction equal after lower-casing, trimming and dropping the listed punctuation; 1 if any
 *   gold answer matches.
 * - Totals: mean over the questions × 100; a question without a prediction counts 0.
 *
 * Two details follow the script exactly: the list holds "……" as one two-character entry, so it never matches a
 * single character and "…" is kept; and ASCII punctuation is not in the list, so "," or "." stay (as nltk's
 * tokens of their own).
 *
 * nltk is not here: `wordTokenize` covers what its Treebank rules do to the runs that occur in Chinese answers
 * (whitespace splits; a Latin/digit word is one token, with "3.14", "1,000" and "U.S." kept whole; every other
 * symbol a token of its own). English contractions ("don't" → "do", "n't") are not split.
 *
 * @module
 */

/** cmrc2018_evaluate.py's `sp_char`, as single characters ("……" can never match one and is left out). */
const PUNCTUATION = new Set([
  "-",
  ":",
  "_",
  "*",
  "^",
  "/",
  "\\",
  "~",
  "`",
  "+",
  "=",
  "，",
  "。",
  "：",
  "？",
  "！",
  "“",
  "”",
  "；",
  "’",
  "《",
  "》",
  "·",
  "、",
  "「",
  "」",
  "（",
  "）",
  "－",
  "～",
  "『",
  "』",
]);

function isCjk(char: string): boolean {
  const c = char.codePointAt(0)!;
  return c >= 0x4e00 && c <= 0x9fa5;
}

/**
 * Words of a run without CJK characters: whitespace separates; letters and digits (with "." or "," between
 * digits, and "." inside an abbreviation like "U.S.") make one word; any other character is a word of its own.
 */
export function wordTokenize(text: string): string[] {
  const out: string[] = [];
  const word = /[\p{L}\p{N}]+(?:[.,][\p{N}]+)*(?:\.(?:[\p{L}]\.)+)?|\S/gu;
  for (const match of text.matchAll(word)) out.push(match[0]);
  return out;
}

/** `mixed_segmentation`: CJK characters and listed punctuation alone, other runs through wordTokenize. */
export function mixedSegmentation(text: string, removePunctuation = false): string[] {
  const segments: string[] = [];
  let run = "";
  const flush = () => {
    if (run !== "") segments.push(...wordTokenize(run));
    run = "";
  };
  for (const char of text.toLowerCase().trim()) {
    const punctuation = PUNCTUATION.has(char);
    if (removePunctuation && punctuation) continue;
    if (isCjk(char) || punctuation) {
      flush();
      segments.push(char);
    } else run += char;
  }
  flush();
  return segments;
}

/** `remove_punctuation`: lower-cased, trimmed, listed punctuation dropped (whitespace inside kept). */
export function normalizeAnswer(text: string): string {
  let out = "";
  for (const char of text.toLowerCase().trim()) if (!PUNCTUATION.has(char)) out += char;
  return out;
}

/** Length of the longest common contiguous run of two segment lists (`find_lcs`). */
export function longestCommonSubstring(a: readonly string[], b: readonly string[]): number {
  let previous = new Int32Array(b.length + 1), current = new Int32Array(b.length + 1);
  let best = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < b.length; j++) {
      current[j + 1] = a[i] === b[j] ? previous[j] + 1 : 0;
      if (current[j + 1] > best) best = current[j + 1];
    }
    [previous, current] = [current, previous];
  }
  return best;
}

/** F1 of one prediction: the best over the gold answers (0 with no gold answer). */
export function qaF1(golds: readonly string[], prediction: string): number {
  const predicted = mixedSegmentation(prediction, true);
  let best = 0;
  for (const gold of golds) {
    const segments = mixedSegmentation(gold, true);
    const lcs = longestCommonSubstring(segments, predicted);
    if (lcs === 0) continue;
    const precision = lcs / predicted.length, recall = lcs / segments.length;
    best = Math.max(best, (2 * precision * recall) / (precision + recall));
  }
  return best;
}

/** EM of one prediction: 1 when it equals a gold answer after normalizeAnswer. */
export function qaExactMatch(golds: readonly string[], prediction: string): number {
  const predicted = normalizeAnswer(prediction);
  return golds.some((gold) => normalizeAnswer(gold) === predicted) ? 1 : 0;
}

export interface QaScores {
  /** Percent, as the official script prints them. */
  exact_match: number;
  f1: number;
  total: number;
  /** Questions without a prediction (scored 0). */
  skipped: number;
}

/** Scores predictions (undefined = unanswered) against each question's gold answers. */
export function qaScores(
  items: Iterable<{ golds: readonly string[]; prediction: string | undefined }>,
): QaScores {
  let em = 0, f1 = 0, total = 0, skipped = 0;
  for (const { golds, prediction } of items) {
    total++;
    if (prediction === undefined) {
      skipped++;
      continue;
    }
    em += qaExactMatch(golds, prediction);
    f1 += qaF1(golds, prediction);
  }
  return {
    exact_match: total ? (100 * em) / total : 0,
    f1: total ? (100 * f1) / total : 0,
    total,
    skipped,
  };
}

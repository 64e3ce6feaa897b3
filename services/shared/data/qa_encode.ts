/**
 * QA examples → model features: `[CLS] question [SEP] context-window [SEP]`, with start/end token labels and,
 * for each context token, its code-point span in the context, so a predicted token span is cut back out of the
 * original context exactly (qa_decode.ts).
 *
 * A context longer than the window budget (maxLength - question tokens - 3) becomes overlapping windows
 * (windows.ts `tokenWindows`: consecutive windows share at least `docStride` tokens, HF run_qa's `stride`), each
 * a feature of its own. The labels follow HF run_qa's `prepare_train_features`: the first matched answer; in a
 * window that does not hold the whole answer both labels point at [CLS] (position 0); otherwise the start is
 * the last token starting at or before the answer's first character and the end the first token ending at or
 * after its last.
 *
 * Letters: Q question tokens, W window tokens, T = Q + W + 3.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import type { WordPieceTokenizer } from "../wordpiece/mod.ts";
import type { QaExample } from "./qa.ts";
import { tokenWindows } from "./windows.ts";

/** What QA encoding needs of the tokenizer (WordPieceTokenizer satisfies it). */
export type QaTokenizer = Pick<WordPieceTokenizer, "tokenizePieces" | "clsId" | "sepId" | "padId">;

export interface QaWindowOptions {
  /** Longest feature, specials included (`--max-length`). */
  maxLength: number;
  /** Tokens consecutive windows of one context share at least (`--doc-stride`, HF run_qa's `stride`). */
  docStride: number;
  /** Questions are cut to this many tokens (`--max-query-length`). */
  maxQueryLength: number;
}

/**
 * HF run_qa's defaults (max_seq_length 384, doc_stride 128; run_squad's max_query_length 64) scaled to a model
 * whose position table is shorter than 384: the stride a third and the question a sixth of the length, as at 384.
 */
export function qaWindowDefaults(maxPositions: number): QaWindowOptions {
  const maxLength = Math.min(384, maxPositions);
  return { maxLength, docStride: Math.floor(maxLength / 3), maxQueryLength: Math.floor(maxLength / 6) };
}

/** Checks the window settings together: the question, three specials and more than `docStride` context tokens fit. */
export function validateQaWindows(o: QaWindowOptions): QaWindowOptions {
  const int = (name: string, value: number, min: number) => {
    if (!Number.isInteger(value) || value < min) {
      throw new InvalidArgument(`${name} must be an integer >= ${min}: current value is ${value}`);
    }
  };
  int("max_length", o.maxLength, 5);
  int("max_query_length", o.maxQueryLength, 1);
  int("doc_stride", o.docStride, 0);
  const budget = o.maxLength - o.maxQueryLength - 3;
  if (o.docStride >= budget) {
    throw new InvalidArgument(
      `doc_stride must be below the context budget max_length - max_query_length - 3 = ${o.maxLength} - ` +
        `${o.maxQueryLength} - 3 = ${budget}: current value is ${o.docStride}`,
    );
  }
  return o;
}

export interface QaFeature {
  ids: number[]; // (T)
  typeIds: number[]; // (T) 0 for [CLS] question [SEP], 1 for the window and its [SEP]
  /** Index of the example among those encoded. */
  example: number;
  /** This window's index among the example's `windows`. */
  window: number;
  windows: number;
  /** Position in `ids` of the window's first context token (Q + 2). */
  contextStart: number;
  /** (W, 2): [start, end) code points in the context of each context token of the window. */
  offsets: Int32Array;
  /** Token positions of the answer in `ids`; 0 ([CLS]) when the window does not hold it or there is none. */
  startPosition: number;
  endPosition: number;
}

/** An answer whose first or last character falls inside a token: its labels cover the whole token. */
export interface UnalignedAnswer {
  example: number;
  id: string;
  text: string;
  /** What the labelled tokens cover in the context. */
  covered: string;
}

export interface QaEncodeReport {
  examples: number;
  features: number;
  /** Contexts that took more than one window. */
  windowedExamples: number;
  /** Questions longer than maxQueryLength tokens, cut. */
  questionsTruncated: number;
  /** Training: examples with no answer that matches its context, left out. */
  withoutAnswer: number;
  /** Training: features whose window does not hold the answer (labelled [CLS], as HF does). */
  answerOutsideWindow: number;
  unalignedCount: number;
  unaligned: UnalignedAnswer[];
}

/** Code-point index → UTF-16 index of a string (length + 1 entries), to cut spans given in code points. */
export function codePointIndex(text: string): Int32Array {
  const index = new Int32Array(text.length + 1);
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    index[n++] = i;
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) i++;
    }
  }
  index[n] = text.length;
  return index.subarray(0, n + 1);
}

/** The text of code points [start, end) of `text`, through its `codePointIndex`. */
export function sliceCodePoints(text: string, index: Int32Array, start: number, end: number): string {
  return text.slice(index[start], index[end]);
}

/**
 * Encodes examples into features. `training`: labels from the first matched answer, and examples without
 * one left out (counted). Otherwise every example is encoded (labels 0) for prediction and evaluation.
 */
export function encodeQaExamples(
  examples: readonly QaExample[],
  tokenizer: QaTokenizer,
  options: QaWindowOptions & { training: boolean },
): { features: QaFeature[]; report: QaEncodeReport } {
  const { maxLength, docStride, maxQueryLength } = validateQaWindows(options);
  const report: QaEncodeReport = {
    examples: examples.length,
    features: 0,
    windowedExamples: 0,
    questionsTruncated: 0,
    withoutAnswer: 0,
    answerOutsideWindow: 0,
    unalignedCount: 0,
    unaligned: [],
  };
  const features: QaFeature[] = [];
  examples.forEach((example, e) => {
    const answer = example.answers[0];
    if (options.training && !answer) {
      report.withoutAnswer++;
      return;
    }
    // tokenizePieces returns views into the tokenizer's buffer: copy before the next call
    const q = tokenizer.tokenizePieces(example.question);
    if (q.length > maxQueryLength) report.questionsTruncated++;
    const question = Array.from(q.ids.subarray(0, Math.min(q.length, maxQueryLength)));
    const c = tokenizer.tokenizePieces(example.context);
    const n = c.length;
    const ids = c.ids.slice(0, n), starts = c.starts.slice(0, n), ends = c.ends.slice(0, n);

    // the answer's token span over the whole context: last token starting at or before its first character,
    // first token ending at or after its end (HF's two while loops)
    let first = -1, last = -1, answerStart = 0, answerEnd = 0;
    if (answer) {
      answerStart = answer.start;
      answerEnd = answer.start + Array.from(answer.text).length;
      for (let i = 0; i < n && starts[i] <= answerStart; i++) first = i;
      for (let i = n - 1; i >= 0 && ends[i] >= answerEnd; i--) last = i;
      if (first >= 0 && last >= first && (starts[first] !== answerStart || ends[last] !== answerEnd)) {
        report.unalignedCount++;
        if (report.unaligned.length < 100) {
          const index = codePointIndex(example.context);
          report.unaligned.push({
            example: e,
            id: example.id,
            text: answer.text,
            covered: sliceCodePoints(example.context, index, starts[first], ends[last]),
          });
        }
      }
    }

    const budget = maxLength - question.length - 3;
    const windows = tokenWindows(n, budget, docStride); // budget > docStride: validateQaWindows
    if (windows.length > 1) report.windowedExamples++;
    const contextStart = question.length + 2;
    windows.forEach(({ start, end }, w) => {
      const W = end - start;
      const feature: QaFeature = {
        ids: [tokenizer.clsId, ...question, tokenizer.sepId, ...ids.subarray(start, end), tokenizer.sepId],
        typeIds: [...new Array<number>(contextStart).fill(0), ...new Array<number>(W + 1).fill(1)],
        example: e,
        window: w,
        windows: windows.length,
        contextStart,
        offsets: new Int32Array(2 * W),
        startPosition: 0,
        endPosition: 0,
      };
      for (let i = 0; i < W; i++) {
        feature.offsets[2 * i] = starts[start + i];
        feature.offsets[2 * i + 1] = ends[start + i];
      }
      // inside this window only when its tokens reach from the answer's start to its end
      if (answer && first >= start && last >= first && last < end) {
        feature.startPosition = contextStart + first - start;
        feature.endPosition = contextStart + last - start;
      } else if (answer) report.answerOutsideWindow++;
      features.push(feature);
    });
  });
  report.features = features.length;
  return { features, report };
}

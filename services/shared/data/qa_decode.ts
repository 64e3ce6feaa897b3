/**
 * Start/end logits of a context's windows → its n best answers, each cut out of the original context by the
 * character offsets of its tokens (qa_encode.ts), so an answer comes back exactly as written: full-width
 * punctuation, traditional characters, Latin words and digits untouched by the tokenizer's lower-casing.
 *
 * As HF run_qa's `postprocess_qa_predictions` (SQuAD v1: every question has an answer): a candidate is a start
 * and an end token of one window with start ≤ end, both inside the context (never the question, [CLS], [SEP]
 * or padding), at most `maxAnswerLength` tokens long, scored start logit + end logit. Unlike HF, which looks
 * at the 20 best starts and ends only, every pair is scored (W × maxAnswerLength per window: cheap), and a span
 * found in two overlapping windows is one candidate with its better score.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import type { QaExample } from "./qa.ts";
import { codePointIndex, type QaFeature, sliceCodePoints } from "./qa_encode.ts";

export interface QaDecodeOptions {
  /** Answers returned per question (the serving call's `top_k`). @default 20 (HF's n_best_size) */
  nBest?: number;
  /** Longest answer in tokens (`--max-answer-length`). @default 30 (HF run_qa) */
  maxAnswerLength?: number;
}

export interface QaAnswerSpan {
  text: string;
  /** [start, end) in code points of the context. */
  start: number;
  end: number;
  /** start logit + end logit. */
  score: number;
  /** softmax of the scores over the n best (HF's `probability`). */
  probability: number;
}

/** One window's logits: its feature and the (T) start and end logits of its row. */
export interface QaWindowLogits {
  feature: Pick<QaFeature, "contextStart" | "offsets">;
  startLogits: ArrayLike<number>;
  endLogits: ArrayLike<number>;
}

function checkedOptions(options: QaDecodeOptions): Required<QaDecodeOptions> {
  const nBest = options.nBest ?? 20, maxAnswerLength = options.maxAnswerLength ?? 30;
  if (!Number.isInteger(nBest) || nBest < 1) {
    throw new InvalidArgument(`top_k (n best) must be a positive integer: current value is ${nBest}`);
  }
  if (!Number.isInteger(maxAnswerLength) || maxAnswerLength < 1) {
    throw new InvalidArgument(
      `max_answer_length must be a positive integer: current value is ${maxAnswerLength}`,
    );
  }
  return { nBest, maxAnswerLength };
}

/** The n best answers of one context over all its windows, best first; [] when no window has a context token. */
export function decodeAnswers(
  context: string,
  windows: readonly QaWindowLogits[],
  options: QaDecodeOptions = {},
): QaAnswerSpan[] {
  const { nBest, maxAnswerLength } = checkedOptions(options);
  // best candidates so far, by score descending; one entry per character span
  const best: Array<{ start: number; end: number; score: number }> = [];
  const offer = (start: number, end: number, score: number) => {
    if (best.length === nBest && score <= best[nBest - 1]!.score) return;
    const same = best.findIndex((c) => c.start === start && c.end === end);
    if (same >= 0) {
      if (best[same]!.score >= score) return;
      best.splice(same, 1);
    }
    let at = best.length;
    while (at > 0 && best[at - 1]!.score < score) at--;
    best.splice(at, 0, { start, end, score });
    if (best.length > nBest) best.pop();
  };
  for (const { feature, startLogits, endLogits } of windows) {
    const W = feature.offsets.length / 2, c0 = feature.contextStart;
    if (startLogits.length < c0 + W || endLogits.length < c0 + W) {
      throw new InvalidArgument(
        `window logits hold ${startLogits.length} start and ${endLogits.length} end values: the window needs ` +
          `${c0 + W} (question, specials and ${W} context tokens)`,
      );
    }
    for (let i = 0; i < W; i++) {
      const s = startLogits[c0 + i]!;
      for (let j = i; j < Math.min(W, i + maxAnswerLength); j++) {
        offer(feature.offsets[2 * i]!, feature.offsets[2 * j + 1]!, s + endLogits[c0 + j]!);
      }
    }
  }
  if (best.length === 0) return [];
  const index = codePointIndex(context);
  const top = best[0]!.score;
  const weights = best.map((c) => Math.exp(c.score - top));
  const total = weights.reduce((a, b) => a + b, 0);
  return best.map((c, i) => ({
    text: sliceCodePoints(context, index, c.start, c.end),
    start: c.start,
    end: c.end,
    score: c.score,
    probability: weights[i]! / total,
  }));
}

/**
 * Answers of every example from the logits of its features (in any order, `feature.example` naming the
 * example): rows[f] = the (T) start and end logits of features[f].
 */
export function decodeExamples(
  examples: readonly Pick<QaExample, "context">[],
  features: readonly QaFeature[],
  rows: readonly { startLogits: ArrayLike<number>; endLogits: ArrayLike<number> }[],
  options: QaDecodeOptions = {},
): QaAnswerSpan[][] {
  if (rows.length !== features.length) {
    throw new InvalidArgument(`${rows.length} rows of logits for ${features.length} features`);
  }
  const byExample: QaWindowLogits[][] = examples.map(() => []);
  features.forEach((feature, f) => {
    const list = byExample[feature.example];
    if (!list) {
      throw new InvalidArgument(`feature ${f} names example ${feature.example} of ${examples.length}`);
    }
    list.push({ feature, ...rows[f]! });
  });
  return examples.map((example, e) => decodeAnswers(example.context, byExample[e]!, options));
}

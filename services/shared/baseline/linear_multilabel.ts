/**
 * The multi-label floor: one binary logistic regression per label (one-vs-rest) over the same hashed character
 * unigram and bigram features as the single-label baseline in linear.ts (pairs read as there), trained together
 * with AdaGrad. A label is predicted when its probability reaches the threshold, as the fine-tuned multi-label
 * head decides. Beside it, the multi-label counterpart of the majority class: always the most frequent label set.
 *
 * Deterministic for a seed; no dependencies beyond the shared metrics.
 *
 * @module
 */
import { multiLabelScores } from "../data/metrics.ts";
import {
  adagradStep,
  exampleFeatures,
  type LinearBaselineOptions,
  mulberry32,
  shuffleInPlace,
} from "./linear.ts";

export interface MultiLabelExample {
  text: string;
  textB?: string;
  /** The example's labels; may be empty. */
  labels: string[];
}

export interface LinearMultiLabelOptions extends LinearBaselineOptions {
  /** Labels in order; every label of the training examples when absent, sorted. */
  labels?: string[];
  /** Probability at which a label is predicted. @default 0.5 */
  threshold?: number;
}

export interface LinearMultiLabel {
  labels: string[];
  /** The predicted labels (in `labels` order) and every label's probability. */
  predict(text: string, textB?: string): { labels: string[]; scores: number[] };
}

export function trainLinearMultiLabel(
  examples: MultiLabelExample[],
  options: LinearMultiLabelOptions = {},
): LinearMultiLabel {
  const buckets = options.buckets ?? 1 << 18;
  const epochs = options.epochs ?? 8;
  const lr = options.learningRate ?? 0.5;
  const l2 = options.l2 ?? 1e-6;
  const threshold = options.threshold ?? 0.5;
  if (examples.length === 0) throw new RangeError("Cannot train the multi-label baseline: no examples");
  if (!(threshold > 0 && threshold < 1)) {
    throw new RangeError(`Cannot use threshold ${threshold}: it must be in (0, 1)`);
  }
  const labels = options.labels ?? [...new Set(examples.flatMap((e) => e.labels))].sort();
  if (labels.length === 0) {
    throw new RangeError("Cannot train the multi-label baseline: no example has a label");
  }
  const K = labels.length;
  const labelIndex = new Map(labels.map((l, i) => [l, i]));
  const weights = new Float32Array(buckets * K);
  const bias = new Float32Array(K);
  const gradSq = new Float32Array(buckets * K).fill(1e-8);
  const featurised = examples.map((e, i) => {
    const y = new Uint8Array(K);
    for (const label of e.labels) {
      const k = labelIndex.get(label);
      if (k === undefined) {
        throw new RangeError(`example ${i} has label "${label}", not one of the ${K} labels given`);
      }
      y[k] = 1;
    }
    return { x: exampleFeatures(e.text, e.textB, buckets), y };
  });
  const probs = new Float64Array(K);
  const score = (x: Map<number, number>) => {
    for (let k = 0; k < K; k++) {
      let z = bias[k]!;
      for (const [f, v] of x) z += weights[f * K + k]! * v;
      probs[k] = 1 / (1 + Math.exp(-z));
    }
    return probs;
  };
  const order = featurised.map((_, i) => i);
  const random = mulberry32(options.seed ?? 42);
  for (let epoch = 0; epoch < epochs; epoch++) {
    shuffleInPlace(order, random);
    for (const i of order) {
      const { x, y } = featurised[i]!;
      const p = score(x);
      for (let k = 0; k < K; k++) {
        // The gradient of binary cross-entropy through the sigmoid: each label is its own logistic regression.
        const g = p[k]! - y[k]!;
        adagradStep({ weights, gradSq, bias }, x, k, K, g, lr, l2);
      }
    }
  }
  return {
    labels,
    predict(text: string, textB?: string) {
      const p = score(exampleFeatures(text, textB, buckets));
      return { labels: labels.filter((_, k) => p[k]! >= threshold), scores: Array.from(p) };
    },
  };
}

/** Micro-averaged F1 of predicted label sets against gold ones, over `labels` (a label outside it is an error). */
export function microF1(
  labels: readonly string[],
  gold: readonly string[][],
  predicted: readonly string[][],
): number {
  const index = new Map(labels.map((l, i) => [l, i]));
  const rows = (sets: readonly string[][]) =>
    sets.map((set) => {
      const row = new Uint8Array(labels.length);
      for (const label of set) {
        const k = index.get(label);
        if (k === undefined) throw new RangeError(`label "${label}" is not one of ${labels.join(", ")}`);
        row[k] = 1;
      }
      return row;
    });
  return multiLabelScores(rows(gold), rows(predicted)).micro.f1;
}

/**
 * The majority floor of a multi-label task: always answering the most frequent training label set (ties go to
 * the set whose `|`-joined name sorts first), scored by micro-F1 on `test`.
 */
export function majorityLabelSet(
  train: readonly { labels: readonly string[] }[],
  test: readonly { labels: readonly string[] }[],
): { labels: string[]; microF1: number } {
  if (train.length === 0) throw new RangeError("Cannot find the majority label set: no training examples");
  const counts = new Map<string, number>();
  for (const e of train) {
    const key = [...e.labels].sort().join("|");
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const key = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]![0];
  const answer = key === "" ? [] : key.split("|");
  const all = [...new Set([...train, ...test].flatMap((e) => e.labels))].sort();
  return { labels: answer, microF1: microF1(all, test.map((e) => [...e.labels]), test.map(() => answer)) };
}

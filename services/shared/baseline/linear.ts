/**
 * The floor every BERT result is reported against: a linear classifier over hashed character unigrams and
 * bigrams (multinomial logistic regression, AdaGrad), the usual strong baseline for Chinese text classification.
 * A sentence pair (`textB`) reads both sides' n-grams apart plus what they share ({@linkcode pairFeatures}).
 * Deterministic for a seed; no dependencies, so the demo report and the quality runs share it.
 */

export interface LinearBaselineOptions {
  /** Hashed feature space; 2^18 keeps collisions rare for a few hundred thousand distinct bigrams. */
  buckets?: number;
  epochs?: number;
  learningRate?: number;
  /** L2 penalty per update, small: the features are sparse counts. */
  l2?: number;
  seed?: number;
}

export interface LinearBaseline {
  labels: string[];
  /** `textB` for a model trained on pairs (and only then). */
  predict(text: string, textB?: string): { label: string; scores: number[] };
}

/** One labelled example; `textB` makes it a sentence pair. */
export interface LinearExample {
  text: string;
  textB?: string;
  label: string;
}

/** FNV-1a over a short string: fast, stable across runs and platforms. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The code points of `text` without whitespace, and their unigrams and bigrams. */
function charNgrams(text: string): string[] {
  const chars = Array.from(text).filter((c) => c.trim() !== "");
  const grams: string[] = [];
  for (let i = 0; i < chars.length; i++) {
    grams.push(chars[i]!);
    if (i + 1 < chars.length) grams.push(chars[i]! + chars[i + 1]!);
  }
  return grams;
}

/** Feature strings hashed into `buckets` with counts, L2-normalised. */
function hashedCounts(grams: Iterable<string>, buckets: number): Map<number, number> {
  const features = new Map<number, number>();
  for (const gram of grams) {
    const index = hashString(gram) % buckets;
    features.set(index, (features.get(index) ?? 0) + 1);
  }
  // Normalise so long and short texts train at the same effective step size.
  const norm = Math.sqrt([...features.values()].reduce((a, v) => a + v * v, 0)) || 1;
  for (const [k, v] of features) features.set(k, v / norm);
  return features;
}

/** Character unigrams and bigrams (code points, whitespace dropped), hashed into `buckets` with counts. */
export function charNgramFeatures(text: string, buckets: number): Map<number, number> {
  return hashedCounts(charNgrams(text), buckets);
}

/**
 * A sentence pair's features: each side's n-grams apart (prefixed, so `a:好` and `b:好` are different weights),
 * the n-grams both sides share, and binned overlap and length difference. The shared part is what a
 * paraphrase or entailment decision mostly rests on for a linear model; the sides alone only carry topic.
 */
export function pairFeatures(textA: string, textB: string, buckets: number): Map<number, number> {
  const a = charNgrams(textA), b = charNgrams(textB);
  const setA = new Set(a), setB = new Set(b);
  const shared = [...setA].filter((g) => setB.has(g));
  const union = new Set([...setA, ...setB]).size;
  const overlap = union ? shared.length / union : 1;
  const lengthDiff = Math.abs(Array.from(textA).length - Array.from(textB).length);
  return hashedCounts([
    ...a.map((g) => "a\u0001" + g),
    ...b.map((g) => "b\u0001" + g),
    ...shared.map((g) => "s\u0001" + g),
    // One-hot bins: a linear model cannot threshold a raw ratio by itself.
    "o\u0001" + Math.round(overlap * 10),
    "l\u0001" + Math.min(10, lengthDiff),
  ], buckets);
}

/** The features of a text, or of a pair when `textB` is given. */
export function exampleFeatures(
  text: string,
  textB: string | undefined,
  buckets: number,
): Map<number, number> {
  return textB === undefined ? charNgramFeatures(text, buckets) : pairFeatures(text, textB, buckets);
}

/** A small seeded PRNG (mulberry32): uniform in [0, 1), the same sequence for a seed everywhere. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Logits → probabilities, in place (max-subtracted, so large scores cannot overflow). */
export function softmaxInPlace(scores: Float64Array): Float64Array {
  let max = -Infinity;
  for (let k = 0; k < scores.length; k++) max = Math.max(max, scores[k]!);
  let sum = 0;
  for (let k = 0; k < scores.length; k++) sum += scores[k] = Math.exp(scores[k]! - max);
  for (let k = 0; k < scores.length; k++) scores[k]! /= sum;
  return scores;
}

/**
 * One AdaGrad step for label `k` of a hashed-feature linear model on the sparse example `x`, where `g` is the
 * loss gradient at that label's logit (softmax for one-of-K, sigmoid for multi-label): the one update rule of
 * every linear baseline here.
 */
export function adagradStep(
  model: { weights: Float32Array; gradSq: Float32Array; bias: Float32Array },
  x: Map<number, number>,
  k: number,
  K: number,
  g: number,
  lr: number,
  l2: number,
): void {
  const { weights, gradSq, bias } = model;
  bias[k]! -= 0.1 * lr * g;
  for (const [f, v] of x) {
    const w = f * K + k;
    const grad = g * v + l2 * weights[w]!;
    gradSq[w]! += grad * grad;
    weights[w]! -= (lr * grad) / Math.sqrt(gradSq[w]!);
  }
}

/** Fisher-Yates shuffle driven by `random` (a seeded mulberry32), so an epoch's order is reproducible. */
export function shuffleInPlace<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

export function trainLinearBaseline(
  examples: LinearExample[],
  options: LinearBaselineOptions = {},
): LinearBaseline {
  const buckets = options.buckets ?? 1 << 18;
  const epochs = options.epochs ?? 8;
  const lr = options.learningRate ?? 0.5;
  const l2 = options.l2 ?? 1e-6;
  if (examples.length === 0) throw new RangeError("Cannot train the linear baseline: no examples");
  const pairs = examples[0]!.textB !== undefined;
  const mixed = examples.findIndex((e) => (e.textB !== undefined) !== pairs);
  if (mixed >= 0) {
    throw new RangeError(
      `Cannot train the linear baseline on texts and pairs at once: example 0 is ${
        pairs ? "a pair" : "a text"
      }, example ${mixed} is not`,
    );
  }
  const labels = [...new Set(examples.map((e) => e.label))].sort();
  const K = labels.length;
  const labelIndex = new Map(labels.map((l, i) => [l, i]));
  const weights = new Float32Array(buckets * K);
  const bias = new Float32Array(K);
  const gradSq = new Float32Array(buckets * K).fill(1e-8);
  const featurised = examples.map((e) => ({
    x: exampleFeatures(e.text, e.textB, buckets),
    y: labelIndex.get(e.label)!,
  }));
  const order = featurised.map((_, i) => i);
  const random = mulberry32(options.seed ?? 42);
  const scores = new Float64Array(K);

  const score = (x: Map<number, number>) => {
    for (let k = 0; k < K; k++) scores[k] = bias[k]!;
    for (const [f, v] of x) for (let k = 0; k < K; k++) scores[k]! += weights[f * K + k]! * v;
    return softmaxInPlace(scores);
  };

  for (let epoch = 0; epoch < epochs; epoch++) {
    shuffleInPlace(order, random);
    for (const i of order) {
      const { x, y } = featurised[i]!;
      const p = score(x);
      for (let k = 0; k < K; k++) {
        const g = p[k]! - (k === y ? 1 : 0);
        adagradStep({ weights, gradSq, bias }, x, k, K, g, lr, l2);
      }
    }
  }

  return {
    labels,
    predict(text: string, textB?: string) {
      if ((textB !== undefined) !== pairs) {
        throw new RangeError(`This linear baseline was trained on ${pairs ? "pairs" : "single texts"}`);
      }
      const p = score(exampleFeatures(text, textB, buckets));
      let best = 0;
      for (let k = 1; k < K; k++) if (p[k]! > p[best]!) best = k;
      return { label: labels[best]!, scores: Array.from(p) };
    },
  };
}

/** The majority-class floor: the accuracy of always answering the most frequent training label. */
export function majorityBaseline(
  train: { label: string }[],
  test: { label: string }[],
): { label: string; accuracy: number } {
  const counts = new Map<string, number>();
  for (const e of train) counts.set(e.label, (counts.get(e.label) ?? 0) + 1);
  const label = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]![0];
  const accuracy = test.length ? test.filter((e) => e.label === label).length / test.length : 0;
  return { label, accuracy };
}

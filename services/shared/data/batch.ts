/**
 * Encoded fine-tuning features → the engine's `Batch` (services/shared/engine/engine.ts), all arrays
 * row-major (B, T), padded with [PAD] and attention 0 up to T.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import type { Batch } from "../engine/engine.ts";
import { permutation, Rng } from "../shards/rng.ts";
import { IGNORE_INDEX, type NerFeature, type TextFeature } from "./encode.ts";
import type { QaFeature } from "./qa_encode.ts";

function checkLength(length: number, T: number, b: number): void {
  if (length > T) {
    throw new InvalidArgument(`feature ${b} has ${length} tokens, more than the batch's seq_len ${T}`);
  }
}

/** classify/pair: `labels` (B); multilabel (when features carry `multiLabel`): `multiLabels` (B, K). */
export function textBatch(features: readonly TextFeature[], T: number, padId: number): Batch {
  const B = features.length;
  const inputIds = new Int32Array(B * T).fill(padId); // (B, T)
  const tokenTypeIds = new Int32Array(B * T); // (B, T)
  const attentionMask = new Int32Array(B * T); // (B, T)
  const K = features[0]?.multiLabel?.length ?? 0;
  const labels = new Int32Array(B); // (B)
  const multiLabels = new Float32Array(B * K); // (B, K)
  features.forEach((feature, b) => {
    checkLength(feature.ids.length, T, b);
    inputIds.set(feature.ids, b * T);
    tokenTypeIds.set(feature.typeIds, b * T);
    attentionMask.fill(1, b * T, b * T + feature.ids.length);
    if (K > 0) multiLabels.set(feature.multiLabel!, b * K);
    else labels[b] = feature.label;
  });
  const batch: Batch = { B, T, inputIds, tokenTypeIds, attentionMask };
  if (K > 0) batch.multiLabels = multiLabels;
  else batch.labels = labels;
  return batch;
}

/** ner: `tokenLabels` (B, T), -100 on specials, continuation pieces and padding. */
export function nerBatch(features: readonly NerFeature[], T: number, padId: number): Batch {
  const B = features.length;
  const inputIds = new Int32Array(B * T).fill(padId); // (B, T)
  const tokenTypeIds = new Int32Array(B * T); // (B, T)
  const attentionMask = new Int32Array(B * T); // (B, T)
  const tokenLabels = new Int32Array(B * T).fill(IGNORE_INDEX); // (B, T)
  features.forEach((feature, b) => {
    checkLength(feature.ids.length, T, b);
    inputIds.set(feature.ids, b * T);
    attentionMask.fill(1, b * T, b * T + feature.ids.length);
    tokenLabels.set(feature.tokenLabels, b * T);
  });
  return { B, T, inputIds, tokenTypeIds, attentionMask, tokenLabels };
}

/** qa: `startPositions`/`endPositions` (B), token positions in the row ([CLS] = 0 where the window holds no answer). */
export function qaBatch(features: readonly QaFeature[], T: number, padId: number): Batch {
  const B = features.length;
  const inputIds = new Int32Array(B * T).fill(padId); // (B, T)
  const tokenTypeIds = new Int32Array(B * T); // (B, T)
  const attentionMask = new Int32Array(B * T); // (B, T)
  const startPositions = new Int32Array(B); // (B)
  const endPositions = new Int32Array(B); // (B)
  features.forEach((feature, b) => {
    checkLength(feature.ids.length, T, b);
    inputIds.set(feature.ids, b * T);
    tokenTypeIds.set(feature.typeIds, b * T);
    attentionMask.fill(1, b * T, b * T + feature.ids.length);
    startPositions[b] = feature.startPosition;
    endPositions[b] = feature.endPosition;
  });
  return { B, T, inputIds, tokenTypeIds, attentionMask, startPositions, endPositions };
}

/**
 * The feature indices of each batch of epoch `epoch`: a permutation drawn from (seed, epoch), cut into
 * batches of `batchSize` (the last one shorter unless `dropLast`).
 *
 * With `lengths`, batches are grouped by length (Hugging Face's `group_by_length`): the permutation is cut into
 * mega-batches of `groupBatches` batches, each mega-batch is sorted longest first and cut into batches, and the
 * batch order is shuffled again. A batch is padded only to its own longest row, so grouping similar lengths
 * cuts the padding that random batches of short and long sentences pay (about half the tokens of People's Daily
 * NER at batch 32) while the batches stay random draws from the data.
 *
 * With `labels` as well, a mega-batch is sorted by each feature's length rank within its own class
 * (`lengthQuantileOrder`), so every batch takes the same slice of every class. Where the class tracks the
 * length (poem forms: the label is the length), a plain length sort would make nearly every batch one class and
 * fine-tuning would learn the batch, not the text; this way each batch holds the classes in the mega-batch's
 * proportions and pays the padding that mixing costs. Where the class does not track the length, the rank
 * within a class is about the rank overall, and the padding stays as low as a plain length sort's.
 */
export function epochBatches(
  count: number,
  batchSize: number,
  options: {
    seed: number;
    epoch: number;
    shuffle?: boolean;
    dropLast?: boolean;
    lengths?: ArrayLike<number>;
    /** The class of each feature (any number that names it); only read with `lengths`. */
    labels?: ArrayLike<number>;
    groupBatches?: number;
  },
): Uint32Array[] {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new InvalidArgument(`batchSize must be a positive integer: got ${batchSize}`);
  }
  const rng = Rng.seeded(options.seed, options.epoch, 0xba7c);
  const order = options.shuffle === false
    ? Uint32Array.from({ length: count }, (_, i) => i)
    : permutation(count, rng);
  const lengths = options.lengths;
  if (lengths && lengths.length !== count) {
    throw new InvalidArgument(`lengths has ${lengths.length} entries for ${count} features`);
  }
  const labels = options.labels;
  if (labels && labels.length !== count) {
    throw new InvalidArgument(`labels has ${labels.length} entries for ${count} features`);
  }
  if (lengths) {
    const group = batchSize * (options.groupBatches ?? 50);
    for (let from = 0; from < count; from += group) {
      const window = order.subarray(from, Math.min(count, from + group));
      order.set(labels ? lengthQuantileOrder(window, lengths, labels) : longestFirst(window, lengths), from);
    }
  }
  const batches: Uint32Array[] = [];
  for (let from = 0; from < count; from += batchSize) {
    const batch = order.subarray(from, Math.min(count, from + batchSize));
    if (batch.length < batchSize && options.dropLast) break;
    batches.push(batch);
  }
  if (lengths && options.shuffle !== false) {
    // Sorted mega-batches would otherwise feed the longest batches first, in every epoch.
    const batchOrder = permutation(batches.length, rng);
    return Array.from(batchOrder, (i) => batches[i]!);
  }
  return batches;
}

/** Stable: equal lengths keep their drawn order, so the grouping adds no bias of its own. */
function longestFirst(indices: ArrayLike<number>, lengths: ArrayLike<number>): number[] {
  return Array.from(indices).sort((a, b) => lengths[b]! - lengths[a]!);
}

/**
 * `indices` ordered by where each sits among its own class sorted longest first, as a fraction of the class
 * ((rank + 0.5) / class size): consecutive runs then hold every class in proportion. Ties (classes of equal
 * size) go longest first, then in drawn order.
 */
function lengthQuantileOrder(
  indices: ArrayLike<number>,
  lengths: ArrayLike<number>,
  labels: ArrayLike<number>,
): number[] {
  const classes = new Map<number, number[]>();
  for (const i of Array.from(indices)) {
    const members = classes.get(labels[i]!);
    if (members) members.push(i);
    else classes.set(labels[i]!, [i]);
  }
  const quantile = new Map<number, number>();
  for (const members of classes.values()) {
    longestFirst(members, lengths).forEach((i, rank) => quantile.set(i, (rank + 0.5) / members.length));
  }
  return Array.from(indices).sort((a, b) => quantile.get(a)! - quantile.get(b)! || lengths[b]! - lengths[a]!);
}

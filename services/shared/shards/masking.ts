/**
 * Masked-LM predictions exactly as google-research/bert create_pretraining_data.py
 * `create_masked_lm_predictions` makes them, on ids instead of token strings. Shared by the sharding
 * build (static masks) and the trainer's reader (dynamic masks re-drawn per epoch, as RoBERTa).
 *
 * @module
 */
import type { Rng } from "./rng.ts";
import { pythonRound } from "./rng.ts";

export interface MaskingSettings {
  /** Fraction of the tokens (specials included, as the reference counts) to predict. @default 0.15 */
  maskedLmProb: number;
  /** Cap on predictions per instance. @default 20 for seq 128 */
  maxPredictionsPerSeq: number;
  /** Random replacements are drawn uniformly from 0..vocabSize-1, as the reference draws from the whole vocab. */
  vocabSize: number;
  maskId: number;
  clsId: number;
  sepId: number;
  /**
   * Whole-word masking: a word (a token with `wordStarts` 1 and the tokens after it with 0) is chosen or
   * skipped as a unit, as the reference's `--do_whole_word_mask` and Chinese-BERT-wwm do.
   */
  wholeWord: boolean;
}

export interface MaskedLm {
  /** Input ids with the chosen positions replaced. */
  inputIds: Uint32Array;
  /** Ascending positions to predict. */
  positions: Uint16Array;
  /** Original ids at those positions. */
  labels: Uint32Array;
}

/** Reusable output buffers for {@linkcode createMaskedLmPredictions}, sized for the longest instance. */
export interface MaskingScratch {
  inputIds: Uint32Array;
  positions: Uint16Array;
  labels: Uint32Array;
}

export function maskingScratch(maxSeqLength: number): MaskingScratch {
  return {
    inputIds: new Uint32Array(maxSeqLength),
    positions: new Uint16Array(maxSeqLength),
    labels: new Uint32Array(maxSeqLength),
  };
}

/**
 * Chooses and replaces the positions to predict in `ids` (the unmasked sequence, `[CLS] A [SEP] B [SEP]`).
 * `wordStarts` (1 = the token starts a word) is only read when `settings.wholeWord`.
 * With `scratch`, the result's arrays are views into it, valid until the next call with the same
 * scratch (the build encodes each instance at once and saves an allocation per array).
 */
export function createMaskedLmPredictions(
  ids: Uint32Array,
  wordStarts: Uint8Array | undefined,
  settings: MaskingSettings,
  rng: Rng,
  scratchOut?: MaskingScratch,
): MaskedLm {
  const length = ids.length;
  if (scratchOut) {
    const output = scratchOut.inputIds.subarray(0, length);
    output.set(ids);
    const count = maskInPlace(
      output,
      length,
      wordStarts,
      settings,
      rng,
      scratchOut.positions,
      scratchOut.labels,
    );
    return {
      inputIds: output,
      positions: scratchOut.positions.subarray(0, count),
      labels: scratchOut.labels.subarray(0, count),
    };
  }
  const output = ids.slice();
  const positions = new Uint16Array(length), labels = new Uint32Array(length);
  const count = maskInPlace(output, length, wordStarts, settings, rng, positions, labels);
  return { inputIds: output, positions: positions.slice(0, count), labels: labels.slice(0, count) };
}

/**
 * {@linkcode createMaskedLmPredictions} on the first `length` ids of `ids`, replaced in place: the
 * ascending positions go to `positions` and their original ids to `labels` (both at least `length`
 * long); returns their count. Allocates nothing (the build masks every instance this way).
 */
export function maskInPlace(
  ids: Uint32Array,
  length: number,
  wordStarts: Uint8Array | undefined,
  settings: MaskingSettings,
  rng: Rng,
  positions: Uint16Array,
  labels: Uint32Array,
): number {
  const { clsId, sepId } = settings;
  // Candidate groups [groupStart[g], groupEnd[g]): one position each, or one whole word each under
  // whole-word masking (a word never spans [CLS]/[SEP], which are no candidates).
  // The reference shuffles every candidate, then walks them until it has enough. Drawing the shuffle
  // lazily, one Fisher-Yates step per candidate visited (`order`), gives the walk the same
  // distribution for a fraction of the random draws.
  const wholeWord = settings.wholeWord && wordStarts !== undefined;
  const groupStart = scratch(length, 0);
  const order = scratch(length, 2);
  let groups = 0;
  let groupEnd: Int32Array | null = null;
  if (wholeWord) {
    groupEnd = scratch(length, 1);
    for (let i = 0; i < length; i++) {
      const id = ids[i]!;
      if (id === clsId || id === sepId) continue;
      if (groups > 0 && !wordStarts![i] && groupEnd[groups - 1] === i) {
        groupEnd[groups - 1] = i + 1;
      } else {
        groupStart[groups] = i;
        groupEnd[groups] = i + 1;
        order[groups] = groups;
        groups++;
      }
    }
  } else {
    // One position a group: the order holds the positions themselves (the same walk, one read less).
    for (let i = 0; i < length; i++) {
      const id = ids[i]!;
      if (id !== clsId && id !== sepId) order[groups++] = i;
    }
  }
  // The original id of every chosen position, by position (labels are written once they are sorted).
  const originals = originalsFor(length);

  const numToPredict = Math.min(
    settings.maxPredictionsPerSeq,
    Math.max(1, pythonRound(length * settings.maskedLmProb)),
  );
  const { maskId, vocabSize } = settings;
  let chosen = 0;
  for (let k = 0; k < groups; k++) {
    if (chosen >= numToPredict) break;
    const pick = rng.randint(k, groups - 1);
    const g = order[pick]!;
    order[pick] = order[k]!;
    order[k] = g;
    const from = groupEnd ? groupStart[g]! : g, to = groupEnd ? groupEnd[g]! : g + 1;
    // A whole word that would exceed the budget is skipped rather than cut, as the reference does.
    // (Groups are disjoint, so the reference's "already covered" check never fires here.)
    if (chosen + (to - from) > numToPredict) continue;
    for (let index = from; index < to; index++) {
      originals[index] = ids[index]!;
      // 80% of the time, replace with [MASK]
      if (rng.random() < 0.8) {
        ids[index] = maskId;
      } else if (rng.random() < 0.5) {
        // 10% of the time, keep the original token
      } else {
        // 10% of the time, replace with a random token of the vocabulary
        ids[index] = rng.randint(0, vocabSize - 1);
      }
      positions[chosen++] = index;
    }
  }
  // Ascending positions: insertion sort for the usual handful, the typed-array sort beyond.
  if (chosen <= 64) {
    for (let i = 1; i < chosen; i++) {
      const p = positions[i]!;
      let j = i - 1;
      for (; j >= 0 && positions[j]! > p; j--) positions[j + 1] = positions[j]!;
      positions[j + 1] = p;
    }
  } else positions.subarray(0, chosen).sort();
  for (let k = 0; k < chosen; k++) labels[k] = originals[positions[k]!]!;
  return chosen;
}

/** Reusable work arrays (masking runs once per instance; allocating them each time dominated). */
const scratchArrays: Int32Array[] = [new Int32Array(512), new Int32Array(512), new Int32Array(512)];
function scratch(length: number, slot: number): Int32Array {
  if (scratchArrays[slot]!.length < length) scratchArrays[slot] = new Int32Array(length * 2);
  return scratchArrays[slot]!;
}

let originalsScratch = new Uint32Array(512);
function originalsFor(length: number): Uint32Array {
  if (originalsScratch.length < length) originalsScratch = new Uint32Array(length * 2);
  return originalsScratch;
}

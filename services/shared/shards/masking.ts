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

/**
 * Chooses and replaces the positions to predict in `ids` (the unmasked sequence, `[CLS] A [SEP] B [SEP]`).
 * `wordStarts` (1 = the token starts a word) is only read when `settings.wholeWord`.
 */
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
  const { clsId, sepId } = settings;
  const length = ids.length;
  // Candidate groups [groupStart[g], groupEnd[g]): one position each, or one whole word each under
  // whole-word masking (a word never spans [CLS]/[SEP], which are no candidates).
  const groupStart = scratch(length, 0);
  const groupEnd = scratch(length, 1);
  let groups = 0;
  const wholeWord = settings.wholeWord && wordStarts !== undefined;
  for (let i = 0; i < length; i++) {
    const id = ids[i]!;
    if (id === clsId || id === sepId) continue;
    if (wholeWord && groups > 0 && !wordStarts![i] && groupEnd[groups - 1] === i) {
      groupEnd[groups - 1] = i + 1;
    } else {
      groupStart[groups] = i;
      groupEnd[groups] = i + 1;
      groups++;
    }
  }
  // The reference shuffles every candidate, then walks them until it has enough. Drawing the shuffle
  // lazily, one Fisher-Yates step per candidate visited, gives the walk the same distribution for a
  // fraction of the random draws.
  const order = scratch(groups, 2);
  for (let g = 0; g < groups; g++) order[g] = g;

  const output = scratchOut ? scratchOut.inputIds.subarray(0, length) : ids.slice();
  if (scratchOut) output.set(ids);
  const numToPredict = Math.min(
    settings.maxPredictionsPerSeq,
    Math.max(1, pythonRound(length * settings.maskedLmProb)),
  );
  const chosen: number[] = [];
  for (let k = 0; k < groups; k++) {
    if (chosen.length >= numToPredict) break;
    const pick = rng.randint(k, groups - 1);
    const g = order[pick]!;
    order[pick] = order[k]!;
    order[k] = g;
    const from = groupStart[g]!, to = groupEnd[g]!;
    // A whole word that would exceed the budget is skipped rather than cut, as the reference does.
    // (Groups are disjoint, so the reference's "already covered" check never fires here.)
    if (chosen.length + (to - from) > numToPredict) continue;
    for (let index = from; index < to; index++) {
      // 80% of the time, replace with [MASK]
      if (rng.random() < 0.8) {
        output[index] = settings.maskId;
      } else if (rng.random() < 0.5) {
        // 10% of the time, keep the original token
      } else {
        // 10% of the time, replace with a random token of the vocabulary
        output[index] = rng.randint(0, settings.vocabSize - 1);
      }
      chosen.push(index);
    }
  }
  chosen.sort((a, b) => a - b);
  const positions = scratchOut
    ? scratchOut.positions.subarray(0, chosen.length)
    : new Uint16Array(chosen.length);
  positions.set(chosen);
  const labels = scratchOut ? scratchOut.labels.subarray(0, chosen.length) : new Uint32Array(chosen.length);
  for (let k = 0; k < chosen.length; k++) labels[k] = ids[chosen[k]!]!;
  return { inputIds: output, positions, labels };
}

/** Reusable work arrays (masking runs once per instance; allocating them each time dominated). */
const scratchArrays: Int32Array[] = [new Int32Array(512), new Int32Array(512), new Int32Array(512)];
function scratch(length: number, slot: number): Int32Array {
  if (scratchArrays[slot]!.length < length) scratchArrays[slot] = new Int32Array(length * 2);
  return scratchArrays[slot]!;
}

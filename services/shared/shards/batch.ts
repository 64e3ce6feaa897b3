/**
 * Pretraining instances → the engine's `Batch` (services/shared/engine/engine.ts): all arrays row-major
 * (B, T), padded with [PAD] and attention 0, MLM labels -100 where nothing is predicted.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import type { Batch } from "../engine/engine.ts";
import type { PretrainInstance } from "./format.ts";

/** Ignore index of the MLM and token-classification losses (PyTorch's default). */
export const IGNORE_INDEX = -100;

export function pretrainBatch(instances: readonly PretrainInstance[], T: number, padId: number): Batch {
  const B = instances.length;
  const inputIds = new Int32Array(B * T).fill(padId); // (B, T)
  const tokenTypeIds = new Int32Array(B * T); // (B, T)
  const attentionMask = new Int32Array(B * T); // (B, T)
  const mlmLabels = new Int32Array(B * T).fill(IGNORE_INDEX); // (B, T)
  const nspLabels = new Int32Array(B); // (B)
  for (let b = 0; b < B; b++) {
    const instance = instances[b]!;
    const length = instance.inputIds.length;
    if (length > T) {
      throw new InvalidArgument(`instance ${b} has ${length} tokens, more than the batch's seq_len ${T}`);
    }
    const row = b * T;
    inputIds.set(instance.inputIds, row);
    attentionMask.fill(1, row, row + length);
    tokenTypeIds.fill(1, row + instance.segmentALength, row + length);
    for (let k = 0; k < instance.maskedPositions.length; k++) {
      mlmLabels[row + instance.maskedPositions[k]!] = instance.maskedLabels[k]!;
    }
    nspLabels[b] = instance.isRandomNext ? 1 : 0;
  }
  return { B, T, inputIds, tokenTypeIds, attentionMask, mlmLabels, nspLabels };
}

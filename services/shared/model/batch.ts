/**
 * Checks a Batch against the model before any backend touches it, so every engine refuses bad input with the
 * same InvalidArgument (field, rule, current value) instead of reading out of bounds.
 */
import { InvalidArgument } from "../errors.ts";
import type { Batch, HeadSpec } from "../engine/engine.ts";
import type { BertConfig } from "./config.ts";

export const IGNORE_INDEX = -100;

function checkLength(
  field: string,
  array: ArrayLike<number> | undefined,
  expected: number,
  dims: string,
): void {
  if (array === undefined) return;
  if (array.length !== expected) {
    throw new InvalidArgument(
      `batch ${field} must hold ${dims} = ${expected} values: current length is ${array.length}`,
    );
  }
}

function checkRange(
  field: string,
  array: ArrayLike<number>,
  lo: number,
  hi: number,
  allowIgnore: boolean,
): void {
  for (let i = 0; i < array.length; i++) {
    const v = array[i]!;
    if (allowIgnore && v === IGNORE_INDEX) continue;
    if (!(v >= lo && v < hi) || !Number.isInteger(v)) {
      throw new InvalidArgument(
        `batch ${field}[${i}] must be an integer in [0, ${hi})${
          allowIgnore ? " or -100" : ""
        }: current value is ${v}`,
      );
    }
  }
}

/**
 * Validates shapes and ranges; with `forTraining` the labels the head needs must be present. Returns nothing:
 * a batch that passes can be indexed without further checks.
 */
export function validateBatch(batch: Batch, config: BertConfig, head: HeadSpec, forTraining: boolean): void {
  const { B, T } = batch;
  if (!Number.isInteger(B) || B < 1) {
    throw new InvalidArgument(`batch B must be a positive integer: current value is ${B}`);
  }
  if (!Number.isInteger(T) || T < 1 || T > config.max_position_embeddings) {
    throw new InvalidArgument(
      `batch T must be an integer in [1, max_position_embeddings=${config.max_position_embeddings}]: current value is ${T}`,
    );
  }
  const BT = B * T;
  checkLength("inputIds", batch.inputIds, BT, "B*T");
  checkLength("tokenTypeIds", batch.tokenTypeIds, BT, "B*T");
  checkLength("attentionMask", batch.attentionMask, BT, "B*T");
  checkRange("inputIds", batch.inputIds, 0, config.vocab_size, false);
  checkRange("tokenTypeIds", batch.tokenTypeIds, 0, config.type_vocab_size, false);
  checkRange("attentionMask", batch.attentionMask, 0, 2, false);
  const K = head.numLabels ?? 0;
  const need = (field: keyof Batch) => {
    if (forTraining && batch[field] === undefined) {
      throw new InvalidArgument(`batch ${field} is required for task '${head.task}'`);
    }
  };
  switch (head.task) {
    case "pretrain":
      need("mlmLabels");
      checkLength("mlmLabels", batch.mlmLabels, BT, "B*T");
      if (batch.mlmLabels) checkRange("mlmLabels", batch.mlmLabels, 0, config.vocab_size, true);
      checkLength("nspLabels", batch.nspLabels, B, "B");
      if (batch.nspLabels) checkRange("nspLabels", batch.nspLabels, 0, 2, false);
      break;
    case "classify":
    case "pair":
      need("labels");
      checkLength("labels", batch.labels, B, "B");
      if (batch.labels) checkRange("labels", batch.labels, 0, K, false);
      break;
    case "multilabel":
      need("multiLabels");
      checkLength("multiLabels", batch.multiLabels, B * K, "B*K");
      if (batch.multiLabels) checkRange("multiLabels", batch.multiLabels, 0, 2, false);
      break;
    case "ner":
      need("tokenLabels");
      checkLength("tokenLabels", batch.tokenLabels, BT, "B*T");
      if (batch.tokenLabels) checkRange("tokenLabels", batch.tokenLabels, 0, K, true);
      break;
    case "qa":
      // positions in the row: HF ignores (clamps to T) out-of-range ones, bertforge's features never make any
      need("startPositions");
      checkLength("startPositions", batch.startPositions, B, "B");
      if (batch.startPositions) checkRange("startPositions", batch.startPositions, 0, T, false);
      need("endPositions");
      checkLength("endPositions", batch.endPositions, B, "B");
      if (batch.endPositions) checkRange("endPositions", batch.endPositions, 0, T, false);
      break;
  }
}

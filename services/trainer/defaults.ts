/**
 * Fine-tuning settings that fit the model: what a job uses for every setting the user left out. The BERT paper's
 * recipe (lr 2e-5..5e-5, batch 32, 3 epochs, the pooler) is for bert-base; a 4-layer, 256-wide model trained with
 * it barely moves in 3 epochs (issue 16: 81% held-out sentiment with the old defaults). The small-model figures
 * are the best measured here (docs/results.md): a learning rate about ten times base's, small batches, more
 * epochs, and the mean of the last layer where the pooler was never trained for sentences.
 *
 * @module
 */
import type { BertConfig } from "../shared/model/config.ts";
import type { FinetuneTask } from "./finetune.ts";

export interface FinetuneDefaults {
  learningRate: number;
  batchSize: number;
  epochs: number;
  maxLength: number;
  /** classify/multilabel/pair only. */
  pooling?: "cls" | "mean";
  /** One line for the job's first event: which size class and why. */
  why: string;
}

/** What the base model brings that the defaults depend on. */
export interface BaseFacts {
  config: Pick<BertConfig, "hidden_size" | "num_hidden_layers" | "max_position_embeddings">;
  /**
   * Whether pretraining trained the pooler through next-sentence prediction: false for bertforge models
   * pretrained with objective `mlm` (their pooler is the random init); true for Hugging Face imports and
   * MLM+NSP models.
   */
  pretrainedPooler: boolean;
}

/** The size classes: hidden size up to and including the bound. */
const SIZE_CLASSES = [
  {
    upTo: 256,
    label: "mini-sized (hidden <= 256)",
    lr: 3e-4,
    nerLr: 1e-3,
    batch: 16,
    epochs: 4,
    nerEpochs: 20,
  },
  {
    upTo: 512,
    label: "small-sized (hidden <= 512)",
    lr: 1e-4,
    nerLr: 3e-4,
    batch: 16,
    epochs: 4,
    nerEpochs: 10,
  },
  {
    upTo: Infinity,
    label: "base-sized (hidden > 512)",
    lr: 3e-5,
    nerLr: 5e-5,
    batch: 32,
    epochs: 3,
    nerEpochs: 3,
  },
] as const;

export function finetuneDefaults(task: FinetuneTask, base: BaseFacts): FinetuneDefaults {
  const { hidden_size: C, max_position_embeddings: P } = base.config;
  const size = SIZE_CLASSES.find((s) => C <= s.upTo)!;
  const small = C <= 512;
  const ner = task === "ner";
  // Small models tag best through short windows (each token still sees its neighbours, and there are many
  // more windows to learn from): 32 tokens beat 64 by 3.7 F1 and 128 by 12 on People's Daily.
  const maxLength = Math.min(P, ner && small ? 32 : 128);
  const pooling = ner ? undefined : (!base.pretrainedPooler || small ? "mean" : "cls");
  const why = `${size.label}` +
    (pooling === "mean"
      ? base.pretrainedPooler
        ? ", mean pooling (small models fine-tune steadier on it)"
        : ", mean pooling (the base's pooler was never trained: MLM-only pretraining)"
      : "");
  return {
    learningRate: ner ? size.nerLr : size.lr,
    batchSize: size.batch,
    epochs: ner ? size.nerEpochs : size.epochs,
    maxLength,
    ...(pooling ? { pooling } : {}),
    why,
  };
}

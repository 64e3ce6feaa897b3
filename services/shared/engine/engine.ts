/**
 * The one interface every backend implements (native OpenBLAS engine, TensorFlow.js on tensorflow/wasm/cpu).
 * The trainer and the inference service only ever talk to this; `select.ts` picks the backend.
 *
 * Letters: B batch, T sequence length, C hidden, V vocab, K labels. All batch arrays are row-major (B, T).
 */
import { FailedPrecondition, InvalidArgument } from "../errors.ts";
import type { BertConfig } from "../model/config.ts";

export type BackendName = "native" | "tensorflow" | "wasm" | "cpu";

/**
 * Which head sits on the encoder. `pretrain` = MLM (tied decoder) + NSP. `ner` = token classification. `qa` =
 * extractive question answering: HF's BertForQuestionAnswering, `qa_outputs` (2, C) giving a start and an end
 * logit per token, no pooler.
 */
export type TaskKind = "pretrain" | "classify" | "multilabel" | "pair" | "ner" | "qa";

export interface HeadSpec {
  task: TaskKind;
  /** K, for classify/multilabel/pair/ner (qa has its two outputs, start and end: none to give). */
  numLabels?: number;
  /** Linear-chain CRF over the token-classification logits (ner only). */
  crf?: boolean;
  /**
   * classify/multilabel/pair: what the classifier reads. Absent: HF's pooler, tanh(W [CLS] + b), which
   * pretraining shapes for NSP only. "mean": the mean of the last layer over the real tokens (no pooler
   * tensors), which uses every token's representation and fine-tunes steadier from a small pretraining corpus.
   */
  pooling?: "mean";
}

/** Checks a head: a known task, K >= 1 labels where it has labels, crf and pooling only where they apply. */
export function validateHead(head: HeadSpec): HeadSpec {
  const { task } = head;
  if (!["pretrain", "classify", "multilabel", "pair", "ner", "qa"].includes(task)) {
    throw new InvalidArgument(
      `head task must be pretrain|classify|multilabel|pair|ner|qa: current value is ${task}`,
    );
  }
  const K = head.numLabels ?? 0;
  if (task === "qa" && head.numLabels !== undefined && head.numLabels !== 2) {
    throw new InvalidArgument(
      `head numLabels of task 'qa' is 2 (start and end) or absent: current value is ${head.numLabels}`,
    );
  }
  if (task !== "pretrain" && task !== "qa" && !(Number.isInteger(K) && K >= 1)) {
    throw new InvalidArgument(
      `head numLabels must be a positive integer for task '${task}': current value is ${K}`,
    );
  }
  if (head.crf && task !== "ner") {
    throw new InvalidArgument(`head crf is only valid for task 'ner': task is '${task}'`);
  }
  if (head.pooling !== undefined && head.pooling !== "mean") {
    throw new InvalidArgument(
      `head pooling must be "mean" or absent (the pooler): current value is ${head.pooling}`,
    );
  }
  if (head.pooling && (task === "pretrain" || task === "ner" || task === "qa")) {
    throw new InvalidArgument(
      `head pooling is for tasks classify, multilabel and pair (the sentence-level heads): task is '${task}'`,
    );
  }
  return head;
}

/** ModelSummary.pooling: "cls" or "mean" for a sentence-level head, "" for ner, qa, pretraining or no head. */
export function sentencePooling(head: HeadSpec | undefined): string {
  if (!head || head.task === "ner" || head.task === "qa" || head.task === "pretrain") return "";
  return head.pooling ?? "cls";
}

/** True where the head reads the HF pooler (not ner or qa, which HF builds without one, nor mean pooling). */
export function headUsesPooler(head: HeadSpec): boolean {
  return head.task !== "ner" && head.task !== "qa" && head.pooling !== "mean";
}

/** A named tensor in Hugging Face layout (torch.nn.Linear weights are [out, in]). */
export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}
export type Weights = Map<string, NamedTensor>;

export interface Batch {
  B: number;
  T: number;
  inputIds: Int32Array; // (B, T)
  tokenTypeIds: Int32Array; // (B, T)
  attentionMask: Int32Array; // (B, T) 1 = real token, 0 = padding
  /** pretrain: (B, T) original id at masked positions, -100 elsewhere. */
  mlmLabels?: Int32Array;
  /** pretrain: (B) 0 = B follows A, 1 = random (HF convention). */
  nspLabels?: Int32Array;
  /** classify/pair: (B) class index. */
  labels?: Int32Array;
  /** multilabel: (B, K) 0/1 targets. */
  multiLabels?: Float32Array;
  /** ner: (B, T) tag index, -100 for ignored positions (specials, padding, continuation pieces). */
  tokenLabels?: Int32Array;
  /** qa: (B) token position of the answer's first token, 0 ([CLS]) where the row holds no answer. */
  startPositions?: Int32Array;
  /** qa: (B) token position of the answer's last token, 0 ([CLS]) where the row holds no answer. */
  endPositions?: Int32Array;
}

export interface StepStats {
  /** Total loss of the batch (MLM + NSP for pretraining). */
  loss: number;
  mlmLoss?: number;
  nspLoss?: number;
  /** Correct / counted predictions, so callers can aggregate accuracies over many batches. */
  mlmCorrect?: number;
  mlmCount?: number;
  nspCorrect?: number;
  nspCount?: number;
  correct?: number;
  count?: number;
}

export interface ForwardOutput {
  /**
   * classify/pair/multilabel: (B, K); ner: (B, T, K); qa: (B, T, 2), start and end logit of each token (HF's
   * qa_outputs before its split); pretrain: MLM logits (B, T, V) only when asked.
   */
  logits: Float32Array;
  /** qa: (B, T) start logits, and (B, T) end logits: the two columns of `logits`. */
  startLogits?: Float32Array;
  endLogits?: Float32Array;
  /** pretrain: NSP logits (B, 2). */
  nspLogits?: Float32Array;
  /** ner with CRF: Viterbi best path (B, T). */
  paths?: Int32Array;
  /** Final hidden states (B, T, C) when `wantHidden` (for Embed). */
  hidden?: Float32Array;
  /** Pooler output (B, C) when `wantHidden`. */
  pooled?: Float32Array;
}

export interface OptimizerConfig {
  lr: number; // peak learning rate
  weightDecay: number; // AdamW decoupled decay; bias and LayerNorm excluded, as BERT does
  beta1: number;
  beta2: number;
  eps: number;
  warmupSteps: number;
  totalSteps: number; // linear decay to 0 at totalSteps
  maxGradNorm: number; // global-norm clipping; 0 disables
  gradAccumSteps: number;
}

export const DEFAULT_OPTIMIZER: OptimizerConfig = {
  lr: 1e-4,
  weightDecay: 0.01,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-6,
  warmupSteps: 0,
  totalSteps: 1,
  maxGradNorm: 1.0,
  gradAccumSteps: 1,
};

/** Everything needed to continue training bit-identically. */
export interface TrainState {
  step: number; // optimizer steps taken
  microStep: number; // micro-batches accumulated since the last optimizer step
  /** AdamW first and second moments, keyed like the weights. */
  moments: Map<string, { m: Float32Array; v: Float32Array }>;
  /** Dropout RNG state (opaque, JSON-serialisable). */
  rng: unknown;
}

export interface Engine {
  readonly backend: BackendName;
  readonly config: BertConfig;
  readonly head: HeadSpec;
  /** Forward + backward on one micro-batch; applies AdamW when `gradAccumSteps` micro-batches have accumulated. */
  trainStep(batch: Batch): StepStats;
  /** Inference: dropout off, no gradients. `mlmLogits` for fill-mask; `wantHidden` for embeddings. */
  forward(batch: Batch, options?: { wantHidden?: boolean; mlmLogits?: boolean }): ForwardOutput;
  /** Evaluation loss/accuracy without updating weights (dropout off). */
  evaluate(batch: Batch): StepStats;
  /** Learning rate the next optimizer step will use (warmup then linear decay, unless pinned). */
  learningRate(): number;
  /**
   * Pins the learning rate of the following optimizer steps; null returns to the step schedule. A time-budgeted
   * job computes its rate from the time spent (`budgetLearningRate`) and pins it before every step. Not part of
   * the train state: the caller pins it again before each step, also after a resume.
   */
  setLearningRate(lr: number | null): void;
  getWeights(): Weights;
  /** Loads weights by HF name; missing or unexpected tensors and shape mismatches throw InvalidArgument naming them. */
  setWeights(weights: Weights, options?: { allowMissingHead?: boolean }): void;
  getTrainState(): TrainState;
  setTrainState(state: TrainState): void;
  /** Per-kernel time of the steps since the last call (the `--profile` flag of the bench). */
  profile?(): Record<string, number>;
  dispose(): void;
}

/** A pinned learning rate must be a finite number >= 0 (or null to unpin). */
export function checkedLearningRate(lr: number | null): number | null {
  if (lr === null) return null;
  if (!(typeof lr === "number" && Number.isFinite(lr) && lr >= 0)) {
    throw new InvalidArgument(`learning rate must be a finite number >= 0: current value is ${lr}`);
  }
  return lr;
}

/** `train`: everything. `serve`: forward and evaluate only (inference, evaluation). */
export type EngineMode = "train" | "serve";

export interface EngineOptions {
  config: BertConfig;
  head: HeadSpec;
  /**
   * `serve` allocates no gradients, optimizer state or backward scratch, which inference and evaluation
   * never use (the gradients and each AdamW moment are as large as the weights); the training methods then
   * throw FailedPrecondition. @default "train"
   */
  mode?: EngineMode;
  optimizer?: Partial<OptimizerConfig>;
  seed?: number;
  /** Worker threads for BLAS/kernels; default all cores. */
  threads?: number;
  /** Largest B*T the engine preallocates for; larger batches are refused with both values in the message. */
  maxBatch?: number;
  maxSeqLen?: number;
}

/** The engine mode an option asks for, `train` when absent; anything else is an InvalidArgument. */
export function engineMode(mode: unknown): EngineMode {
  if (mode === undefined) return "train";
  if (mode !== "train" && mode !== "serve") {
    throw new InvalidArgument(`mode must be train|serve: current value is ${JSON.stringify(mode)}`);
  }
  return mode;
}

/** The guard of every training method: a serving engine has no gradients or optimizer state to use. */
export function requireTraining(mode: EngineMode, method: string): void {
  if (mode === "train") return;
  throw new FailedPrecondition(
    `${method} needs a training engine: this one was created with mode "serve" (forward and evaluate ` +
      `only, no gradients or optimizer state); create it with mode "train" to train`,
  );
}

/**
 * The bounds of every training and evaluation setting, in one place. The trainer checks them when a job is
 * submitted (SubmitJob, Evaluate), so a bad setting is INVALID_ARGUMENT naming the field and the bound and the job
 * is never created; bertctl checks the same bounds before it sends anything (exit 2). docs/limits.md lists them.
 *
 * The upper bounds are not what a node can do but what no sane job asks for: they exist so that a typo, a wrapped
 * integer or a hostile request (`steps=1e12`, `grad_accum=1e9`) is refused at the door instead of becoming a job
 * that never ends, is retried after every restart, or fails hours later. What a node can hold is the memory
 * estimate below.
 *
 * @module
 */
import type { BertConfig } from "./config.ts";
import { parameterCount } from "./config.ts";
import { InvalidArgument, ResourceExhausted } from "../errors.ts";

/** An inclusive range of integers. */
export interface IntRange {
  min: number;
  max: number;
}

/** A range of reals; `open` names the ends that are excluded. */
export interface RealRange {
  min: number;
  max: number;
  open?: "min" | "max" | "both";
}

/** Counts (integers, bounds inclusive). */
export const COUNT_LIMITS = {
  /** Optimizer steps: BERT-base itself took 1M; 10M at a step a second is four months. */
  steps: { min: 1, max: 10_000_000 },
  /** Passes over a fine-tuning set. */
  epochs: { min: 1, max: 1_000 },
  /** Sequences in one micro-batch (the memory estimate bounds it further). */
  batchSize: { min: 1, max: 4_096 },
  /** Micro-batches per optimizer step: one step of 1e9 micro-batches would never end. */
  gradAccum: { min: 1, max: 1_024 },
  /**
   * Tokens per example: [CLS] + [SEP] + a few tokens at least (a pair needs two [SEP]s); at most the model's
   * max_position_embeddings, checked where the model is known.
   */
  maxLength: { min: 8, max: 8_192 },
  /** Checkpoint and evaluation intervals, in steps. */
  interval: { min: 1, max: 10_000_000 },
  /** Checkpoints kept on disk. */
  keepCheckpoints: { min: 1, max: 100 },
  /** Evaluations without improvement before early stopping. */
  patience: { min: 1, max: 10_000 },
  /** Seeds are 32-bit everywhere they are used (the RNGs take a uint32). */
  seed: { min: 0, max: 0xffff_ffff },
  /** Labels of a classification head. */
  labels: { min: 2, max: 10_000 },
  /** Characters in one label. */
  labelChars: { min: 1, max: 200 },
  /** Mistakes listed by one Evaluate (they travel in one response). */
  maxErrors: { min: 0, max: 10_000 },
} as const satisfies Record<string, IntRange>;

/** Rates and fractions. */
export const RATE_LIMITS = {
  /**
   * Peak AdamW learning rate. Transformers diverge far below 1 (BERT used 1e-4, small models here 1e-3 at most);
   * the bound exists to refuse NaN, infinities and 1e308, which failed at step 3.
   */
  learningRate: { min: 0, max: 1, open: "min" },
  /** Decoupled AdamW weight decay (BERT: 0.01); negative would grow the weights every step. */
  weightDecay: { min: 0, max: 1 },
  /** Shares of a job spent warming up. */
  warmupFraction: { min: 0, max: 1, open: "max" },
} as const satisfies Record<string, RealRange>;

/** `value` if it is an integer in `range`; else InvalidArgument naming `field`, the range and the value. */
export function checkCount(field: string, value: number, range: IntRange): number {
  if (!Number.isInteger(value) || value < range.min || value > range.max) {
    throw new InvalidArgument(
      `${field} must be an integer in [${range.min}, ${range.max}]: current value is ${value}`,
    );
  }
  return value;
}

/** `value` if it is a finite number in `range`; else InvalidArgument naming `field`, the range and the value. */
export function checkReal(field: string, value: number, range: RealRange): number {
  const lowOpen = range.open === "min" || range.open === "both";
  const highOpen = range.open === "max" || range.open === "both";
  const above = lowOpen ? value > range.min : value >= range.min;
  const below = highOpen ? value < range.max : value <= range.max;
  if (!(Number.isFinite(value) && above && below)) {
    throw new InvalidArgument(`${field} must be in ${formatRange(range)}: current value is ${value}`);
  }
  return value;
}

/** `[0, 1)`, `(0, 1]`: a range as the messages and the docs write it. */
export function formatRange(range: RealRange): string {
  const lowOpen = range.open === "min" || range.open === "both";
  const highOpen = range.open === "max" || range.open === "both";
  return `${lowOpen ? "(" : "["}${range.min}, ${range.max}${highOpen ? ")" : "]"}`;
}

/**
 * A max_length within its limits and within the model's positions (`model` names it in the message): a longer
 * sequence has no position embedding to read.
 */
export function checkMaxLength(field: string, value: number, maxPositions: number, model: string): number {
  checkCount(field, value, COUNT_LIMITS.maxLength);
  if (value > maxPositions) {
    throw new InvalidArgument(
      `${field} ${value} exceeds max_position_embeddings ${maxPositions} of ${model}`,
    );
  }
  return value;
}

/** What a training (or evaluation) engine is sized for. */
export interface EngineShape {
  /** Sequences per micro-batch. */
  batch: number;
  /** Tokens per sequence. */
  seqLen: number;
  /** Pretraining heads (MLM decoder over the vocab) or a classification head of `labels` outputs. */
  task: "pretrain" | "finetune";
  labels?: number;
  /** Serving/evaluation: no gradients, no optimizer moments, no backward buffers. */
  training: boolean;
}

/**
 * Bytes an engine of this shape holds, modelled on the native engine's arenas (native_engine.ts): parameters,
 * gradients and AdamW's two moments are four parameter-sized float32 arenas; activations are kept per layer for
 * backward (per token about 8C + 2F floats, and two B*NH*T*T attention maps), plus scratch and heads. Measured
 * against the engine's own memoryBytes() in limits_test.ts. The TensorFlow.js backend holds about as much.
 */
export function engineMemoryBytes(config: BertConfig, shape: EngineShape): number {
  const C = config.hidden_size, F = config.intermediate_size, L = config.num_hidden_layers;
  const NH = config.num_attention_heads, V = config.vocab_size;
  const P = parameterCount(config) + C * (shape.labels ?? 0);
  const NT = shape.batch * shape.seqLen;
  const NA = shape.batch * NH * shape.seqLen * shape.seqLen;
  const attentionMaps = shape.training ? 2 : 1;
  const perLayer = NT * ((shape.training ? 8 : 6) * C + 2 * F) + attentionMaps * NA;
  const scratch = NT * ((shape.training ? 9 : 5) * C + (shape.training ? F : 0)) + (shape.training ? NA : 0);
  // The MLM logits are computed in chunks of at most 2^24 floats (native_engine.ts LOGITS_CHUNK_FLOATS).
  const mlm = shape.task === "pretrain" ? 4 * NT * C + Math.min(NT * V, Math.max(V, 1 << 24)) : 0;
  const floats = (shape.training ? 4 : 1) * P + (L + 1) * perLayer + scratch + mlm;
  return 4 * floats;
}

/** The memory of this node, as the trainer's jobs share it. */
export function nodeMemoryBytes(): number {
  return Deno.systemMemoryInfo().total;
}

/**
 * Refuses an engine that cannot fit the node: RESOURCE_EXHAUSTED naming the estimate, the memory and what to
 * change. Checked at submit, so a job that would be killed for memory (and resumed, and killed again) is never
 * created.
 */
export function checkFitsMemory(
  what: string,
  config: BertConfig,
  shape: EngineShape,
  memoryBytes: number = nodeMemoryBytes(),
): number {
  const bytes = engineMemoryBytes(config, shape);
  if (bytes > memoryBytes) {
    throw new ResourceExhausted(
      `${what}: the model (L=${config.num_hidden_layers} C=${config.hidden_size} F=${config.intermediate_size} V=${config.vocab_size}) at batch ${shape.batch} x ${shape.seqLen} tokens needs about ${
        gib(bytes)
      } of memory, and this node has ${
        gib(memoryBytes)
      }: use a smaller batch (with grad_accum), shorter rows or a smaller model`,
    );
  }
  return bytes;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/**
 * A pretraining job: MLM + NSP on a shard set, as in the BERT paper. A held-out slice of the shards (never
 * trained on) is evaluated every `evalEvery` steps for MLM accuracy, NSP accuracy and perplexity.
 */
import type { Batch, Engine, HeadSpec } from "../shared/engine/engine.ts";
import { type BertConfig, parseConfig, presetConfig } from "../shared/model/config.ts";
import { configForHead, initWeights } from "../shared/model/checkpoint.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../shared/errors.ts";
import { InstanceStream, ShardSet } from "../shared/shards/reader.ts";
import { originalIds, type PretrainInstance } from "../shared/shards/format.ts";
import { pretrainBatch } from "../shared/shards/batch.ts";
import type { ShardCursor } from "../shared/shards/reader.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { manifestKey } from "../shared/store/publish.ts";
import { Sha256 } from "../shared/store/hash.ts";
import { type BatchSource, runTrainingLoop } from "./loop.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import {
  createJobEngine,
  curvePictures,
  type JobOutcome,
  lineageJson,
  publishedModelRef,
  type TrainerJobContext,
} from "./jobs.ts";
import { validateName } from "../shared/model/registry.ts";
import { loadModel, publishModel, resolveModel } from "./models.ts";
import { publishTarget } from "./publish_target.ts";
import { formatDuration } from "../shared/report/duration.ts";
import {
  checkCount,
  checkFitsMemory,
  checkReal,
  COUNT_LIMITS,
  type IntRange,
  RATE_LIMITS,
} from "../shared/model/limits.ts";
import {
  MAX_BUDGET_SECONDS,
  PRETRAIN_OBJECTIVES,
  type PretrainObjective,
} from "../shared/model/pretraining.ts";

export interface PretrainJobSpec {
  /** Model name to publish. */
  name: string;
  shards: string;
  /** A preset name, or absent when `configJson` is given. */
  arch?: string;
  configJson?: string;
  /** Optimizer steps; with `budgetSeconds`, an optional cap (0 or absent: as many as the budget holds). */
  steps: number;
  /**
   * Train for this much training time (seconds) instead of a step count: the learning rate warms up over
   * `warmupFraction` of the budget and decays to 0 as it runs out (`budgetLearningRate`), and the job ends
   * when it is spent. Time the job was down does not count; resume continues the budget where it stopped.
   */
  budgetSeconds?: number;
  /**
   * A first phase on shards of shorter rows (the same vocab), for `shortFraction` of the budget (or of the
   * steps), with the batch scaled so a step holds as many tokens; then `shards`. Short rows teach attention
   * where a token's neighbours are many times sooner than rows of 128 (docs/results.md), as BERT itself trained
   * 90% of its steps at 128 before 512.
   */
  shortShards?: string;
  /** Share of the job spent on `shortShards`, in (0, 1). @default 0.5 with shortShards */
  shortFraction?: number;
  /** Budgeted jobs: the share of the budget spent warming up. @default 0.05 */
  warmupFraction?: number;
  /**
   * `mlm-nsp` (BERT's MLM + next-sentence prediction) or `mlm` (masked LM alone, as RoBERTa and Cramming found
   * better: NSP costs a pooler forward and teaches little). @default `mlm` on packed shards, else `mlm-nsp`
   */
  objective?: PretrainObjective;
  /**
   * Share of tokens masked, re-drawn every time an instance is read (implies dynamic masking). Wettig et al.
   * 2022 found 15% too low for small budgets. @default the shards' masked_lm_prob (static masks)
   */
  maskRate?: number;
  /**
   * Dropout of the encoder while pretraining (hidden and attention), overriding the architecture's; the published
   * config keeps the architecture's for fine-tuning. Cramming turns it off: within a budget that reads each token
   * about once there is nothing to overfit, and dropout only slows learning. @default 0 with a budget, else the
   * architecture's (0.1)
   */
  dropout?: number;
  batchSize?: number;
  learningRate?: number;
  warmupSteps?: number;
  seed?: number;
  gradAccum?: number;
  checkpointEvery?: number;
  evalEvery?: number;
  keepCheckpoints?: number;
  weightDecay?: number;
  initModel?: { name: string; version?: string };
  dynamicMasking?: boolean;
  /** Steps between progress events. @default about 200 events per job */
  logEvery?: number;
}

/** The spec with every default filled in, as recorded in lineage and used by the job. */
export function resolvePretrainSpec(
  spec: PretrainJobSpec,
):
  & Required<
    Omit<
      PretrainJobSpec,
      | "arch"
      | "configJson"
      | "initModel"
      | "budgetSeconds"
      | "objective"
      | "maskRate"
      | "dropout"
      | "shortShards"
      | "shortFraction"
    >
  >
  & PretrainJobSpec {
  validateName(spec.name, "name");
  validateName(spec.shards, "pretrain.shards");
  const budgeted = spec.budgetSeconds !== undefined && spec.budgetSeconds !== 0;
  if (budgeted && !(spec.budgetSeconds! > 0 && spec.budgetSeconds! <= MAX_BUDGET_SECONDS)) {
    throw new InvalidArgument(
      `pretrain.budget_seconds must be in (0, ${MAX_BUDGET_SECONDS}] (30 days): current value is ${spec.budgetSeconds}`,
    );
  }
  if (budgeted && (spec.steps === 0 || spec.steps === undefined)) {
    // No cap: the budget decides.
  } else if (spec.steps === 0 || spec.steps === undefined) {
    throw new InvalidArgument("pretrain.steps is required (> 0) unless budget_seconds is set");
  } else checkCount("pretrain.steps", spec.steps, COUNT_LIMITS.steps);
  if (budgeted && spec.warmupSteps !== undefined) {
    throw new InvalidArgument(
      "pretrain.warmup_steps does not apply to a time budget: give warmup_fraction (a share of the budget) instead",
    );
  }
  if (!budgeted && spec.warmupFraction !== undefined) {
    throw new InvalidArgument(
      "pretrain.warmup_fraction needs budget_seconds; without a budget give warmup_steps",
    );
  }
  if (spec.warmupFraction !== undefined) {
    checkReal("pretrain.warmup_fraction", spec.warmupFraction, RATE_LIMITS.warmupFraction);
  }
  if (spec.objective !== undefined && !PRETRAIN_OBJECTIVES.includes(spec.objective)) {
    throw new InvalidArgument(
      `pretrain.objective must be ${PRETRAIN_OBJECTIVES.join(" or ")}: current value is ${
        JSON.stringify(spec.objective)
      }`,
    );
  }
  if (spec.shortShards !== undefined && spec.shortShards !== "") {
    validateName(spec.shortShards, "pretrain.short_shards");
  }
  if (spec.shortFraction !== undefined) {
    if (!spec.shortShards) throw new InvalidArgument("pretrain.short_fraction needs short_shards");
    if (!(spec.shortFraction > 0 && spec.shortFraction < 1)) {
      throw new InvalidArgument(
        `pretrain.short_fraction must be in (0, 1): current value is ${spec.shortFraction}`,
      );
    }
  }
  if (spec.dropout !== undefined && !(spec.dropout >= 0 && spec.dropout < 1)) {
    throw new InvalidArgument(`pretrain.dropout must be in [0, 1): current value is ${spec.dropout}`);
  }
  if (spec.maskRate !== undefined && !(spec.maskRate >= 0.05 && spec.maskRate <= 0.8)) {
    throw new InvalidArgument(`pretrain.mask_rate must be in [0.05, 0.8]: current value is ${spec.maskRate}`);
  }
  if (!spec.arch && !spec.configJson) throw new InvalidArgument("pretrain needs arch or config_json");
  const steps = budgeted && !spec.steps ? 0 : spec.steps;
  const smallPreset = spec.arch === "bert-mini" || spec.arch === "bert-small";

  // 0 or absent: the default (proto3 cannot tell 0 from unset); anything else within its limits (limits.ts).
  const count = (field: string, v: number | undefined, range: IntRange, fallback: number) =>
    v === undefined || v === 0 ? fallback : checkCount(`pretrain.${field}`, v, range);
  const resolved = {
    ...spec,
    batchSize: count("batch_size", spec.batchSize, COUNT_LIMITS.batchSize, 32),
    // A budget is a short schedule for a small model: its peak rate can be higher (measured: docs/results.md).
    learningRate: spec.learningRate === undefined || spec.learningRate === 0
      ? budgeted && smallPreset ? 5e-4 : 1e-4
      : checkReal("pretrain.learning_rate", spec.learningRate, RATE_LIMITS.learningRate),
    warmupSteps: spec.warmupSteps === undefined
      ? Math.round(steps * 0.1)
      : checkCount("pretrain.warmup_steps", spec.warmupSteps, { ...COUNT_LIMITS.steps, min: 0 }),
    warmupFraction: spec.warmupFraction ?? (budgeted ? 0.05 : 0),
    seed: spec.seed === undefined ? 42 : checkCount("pretrain.seed", spec.seed, COUNT_LIMITS.seed),
    gradAccum: count("grad_accum", spec.gradAccum, COUNT_LIMITS.gradAccum, 1),
    checkpointEvery: count(
      "checkpoint_every",
      spec.checkpointEvery,
      COUNT_LIMITS.interval,
      budgeted ? 500 : Math.min(1000, steps),
    ),
    evalEvery: count("eval_every", spec.evalEvery, COUNT_LIMITS.interval, 0),
    keepCheckpoints: count("keep_checkpoints", spec.keepCheckpoints, COUNT_LIMITS.keepCheckpoints, 3),
    weightDecay: spec.weightDecay === undefined
      ? 0.01
      : checkReal("pretrain.weight_decay", spec.weightDecay, RATE_LIMITS.weightDecay),
    dynamicMasking: spec.dynamicMasking ?? spec.maskRate !== undefined,
    // Within a budget that reads each token about once there is nothing to overfit (Cramming).
    ...(budgeted && spec.dropout === undefined ? { dropout: 0 } : {}),
    logEvery: count(
      "log_every",
      spec.logEvery,
      COUNT_LIMITS.interval,
      budgeted ? 10 : Math.max(1, Math.round(steps / 200)),
    ),
  };
  if (resolved.evalEvery === 0) resolved.evalEvery = resolved.checkpointEvery;
  if (spec.maskRate !== undefined && spec.dynamicMasking === false) {
    throw new InvalidArgument(
      "pretrain.mask_rate re-draws masks as it reads (dynamic masking): it cannot be off",
    );
  }
  if (steps && resolved.warmupSteps > steps) {
    throw new InvalidArgument(`pretrain.warmup_steps ${resolved.warmupSteps} exceeds steps ${steps}`);
  }
  return resolved;
}

/** The job's config (a preset at the shards' vocab size, or config_json), checked against the shards. */
function pretrainConfig(spec: PretrainJobSpec, set: ShardSet): BertConfig {
  const { vocab, settings } = set.manifest;
  const config = spec.configJson ? parseConfig(spec.configJson) : presetConfig(spec.arch!, vocab.size);
  if (config.vocab_size !== vocab.size) {
    throw new InvalidArgument(
      `pretrain.config_json vocab_size ${config.vocab_size} does not match the vocab of shards ${spec.shards} (${vocab.size} entries)`,
    );
  }
  if (settings.maxSeqLength > config.max_position_embeddings) {
    throw new InvalidArgument(
      `shards ${spec.shards} have seq_len ${settings.maxSeqLength}, more than the config's max_position_embeddings ${config.max_position_embeddings}`,
    );
  }
  return config;
}

/**
 * What SubmitJob checks before a pretraining job is created, so a typo or a job the node cannot hold fails the
 * call (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED) instead of becoming a failed (and retried) job: the
 * settings' limits, the shards and short shards exist and fit the config, the init model fits, and the engine
 * fits the node's memory. Reads manifests and config.json only.
 */
export async function checkPretrainInputs(store: ObjectStore, spec: PretrainJobSpec): Promise<void> {
  const resolved = resolvePretrainSpec(spec);
  const open = (shards: string, field: string) =>
    ShardSet.open(store, shards).catch((error) => {
      if (error instanceof NotFound) throw new NotFound(`${field}: no shard set named ${shards}`);
      throw error;
    });
  const set = await open(spec.shards, "pretrain.shards");
  const config = pretrainConfig(spec, set);
  if (spec.shortShards) await open(spec.shortShards, "pretrain.short_shards");
  if (spec.initModel) {
    const init = await resolveModel(store, spec.initModel, "pretrain.init_model");
    const initConfig = await store.getJson<BertConfig>(`${init.prefix}/config.json`);
    for (const key of ["vocab_size", "hidden_size", "num_hidden_layers"] as const) {
      if (initConfig[key] !== config[key]) {
        throw new InvalidArgument(
          `pretrain.init_model ${init.name}/${init.version} has ${key} ${initConfig[key]}, the job's config ${
            config[key]
          }`,
        );
      }
    }
  }
  // A short phase holds as many tokens per step in shorter rows: the long rows size the engine.
  checkFitsMemory("pretrain", config, {
    batch: resolved.batchSize,
    seqLen: set.manifest.settings.maxSeqLength,
    task: "pretrain",
    training: true,
  });
}

/** A cheap content hash of an instance's original tokens, to keep held-out instances out of training. */
function instanceKey(instance: PretrainInstance): string {
  const ids = originalIds(instance);
  let h1 = 0x811c9dc5, h2 = 0x01000193 ^ ids.length;
  for (let i = 0; i < ids.length; i++) {
    h1 = Math.imul(h1 ^ ids[i]!, 0x01000193);
    h2 = Math.imul(h2 ^ ids[i]!, 0x5bd1e995) ^ (h2 >>> 13);
  }
  return `${(h1 >>> 0).toString(36)}.${(h2 >>> 0).toString(36)}.${instance.segmentALength}`;
}

/**
 * The held-out instances, at most 8 batches: the shard set's own eval split (instances of documents the
 * training split never saw) when it has one; otherwise the last instances of the last shard (about 5%, a
 * whole number of batches), which training then skips (`exclude`), or none when the set is too small.
 */
async function heldOut(
  set: ShardSet,
  B: number,
): Promise<{ instances: PretrainInstance[]; exclude: boolean }> {
  const evalInstances = set.manifest.evalInstances ?? 0;
  if (evalInstances >= B) {
    const stream = InstanceStream.over(set, { seed: 0, split: "eval", shuffle: false, maxEpochs: 1 });
    const instances: PretrainInstance[] = [];
    const wanted = Math.min(8 * B, Math.floor(evalInstances / B) * B);
    for (let x = await stream.next(); x && instances.length < wanted; x = await stream.next()) {
      instances.push(x);
    }
    return { instances, exclude: false };
  }
  const total = set.manifest.instances;
  const wanted = Math.min(8 * B, Math.floor((total * 0.05) / B) * B);
  if (wanted < B || total < 4 * B) return { instances: [], exclude: false };
  const last = await set.loadShard(set.manifest.shards.length - 1);
  const n = Math.min(wanted, Math.floor(last.count / B) * B);
  const out: PretrainInstance[] = [];
  for (let i = last.count - n; i < last.count; i++) out.push(last.get(i));
  return { instances: out, exclude: true };
}

/** Shard instances in the reader's shuffled order, minus the held-out ones, as (B, T) micro-batches. */
class ShardBatchSource implements BatchSource {
  constructor(
    private stream: InstanceStream,
    private readonly open: (cursor: ShardCursor) => InstanceStream,
    private readonly exclude: Set<string>,
    private readonly B: number,
    private readonly T: number,
    private readonly padId: number,
    /** Without NSP the batch carries no next-sentence labels, which is what makes both engines skip that loss. */
    private readonly nsp: boolean,
  ) {}
  async next(): Promise<Batch | null> {
    const instances: PretrainInstance[] = [];
    while (instances.length < this.B) {
      const instance = await this.stream.next();
      if (!instance) return null;
      if (this.exclude.size && this.exclude.has(instanceKey(instance))) continue;
      instances.push(instance);
    }
    const batch = pretrainBatch(instances, this.T, this.padId);
    if (!this.nsp) delete batch.nspLabels;
    return batch;
  }
  cursor(): unknown {
    return this.stream.cursor();
  }
  restore(cursor: unknown): void {
    this.stream = this.open(cursor as ShardCursor);
  }
  epoch(): number {
    return this.stream.epoch;
  }
}

/**
 * Two shard sets one after the other: the short-row phase until the job's progress reaches `boundary`, then the
 * main one, for good (a resumed job restores the phase from its cursor).
 */
class PhasedBatchSource implements BatchSource {
  #phase = 0;
  constructor(
    private readonly phases: [BatchSource, BatchSource],
    private readonly boundary: number,
    private readonly onSwitch: () => void,
  ) {}
  setProgress(fraction: number): void {
    if (this.#phase === 0 && fraction >= this.boundary) {
      this.#phase = 1;
      this.onSwitch();
    }
  }
  next(): Promise<Batch | null> {
    return this.phases[this.#phase].next();
  }
  cursor(): unknown {
    return { phase: this.#phase, cursors: this.phases.map((s) => s.cursor()) };
  }
  async restore(cursor: unknown): Promise<void> {
    const c = cursor as { phase: number; cursors: unknown[] };
    this.#phase = c.phase;
    for (let i = 0; i < this.phases.length; i++) await this.phases[i]!.restore(c.cursors[i]);
  }
  epoch(): number {
    return this.phases[this.#phase].epoch();
  }
}

const POSITIONS = "bert.embeddings.position_embeddings.weight";

/**
 * Positions `[trained, upTo)` take the embeddings of positions `p mod trained`. The short phase never trained
 * them (they are still at their random init), and starting the long phase from random positions cost the
 * 30-minute run most of what the short phase had learnt (training MLM 26% -> 17% at the switch, docs/results.md);
 * copies keep what the model learnt about local order, as Longformer extends BERT's positions. Optimizer moments
 * stay as they are (zero for rows no step has touched).
 */
export function tilePositionEmbeddings(engine: Engine, trained: number, upTo: number): void {
  const weights = engine.getWeights();
  const table = weights.get(POSITIONS);
  if (!table) throw new Error(`the engine has no ${POSITIONS}`);
  const [rows, width] = table.shape as [number, number];
  const end = Math.min(upTo, rows);
  for (let p = trained; p < end; p++) {
    table.data.copyWithin(p * width, (p % trained) * width, (p % trained) * width + width);
  }
  engine.setWeights(weights);
}

async function readVocab(
  store: ObjectStore,
  set: ShardSet,
): Promise<{ vocabText: string; tokenizerJson?: string }> {
  const name = set.manifest.vocab.name;
  if (!name) {
    throw new FailedPrecondition(`shards ${set.name} do not name their vocab (manifest vocab.name is empty)`);
  }
  let vocabText: string;
  try {
    vocabText = await store.getText(`vocabs/${name}/vocab.txt`);
  } catch (error) {
    if (error instanceof NotFound) {
      throw new NotFound(
        `vocab ${name} of shards ${set.name} is not in the store (vocabs/${name}/vocab.txt)`,
      );
    }
    throw error;
  }
  // A vocab imported as vocab.txt alone still gets a tokenizer.json, so the published model is complete.
  const tokenizerJson = await store.getText(`vocabs/${name}/tokenizer.json`).catch(() =>
    WordPieceTokenizer.fromVocabText(vocabText).toTokenizerJson()
  );
  return { vocabText, tokenizerJson };
}

/** Pretrain metrics on held-out instances: loss, MLM/NSP accuracy, perplexity exp(mean MLM loss). */
function evaluatePretrain(engine: Engine, batches: Batch[]): Record<string, number> {
  let loss = 0, mlmLoss = 0, mlmCorrect = 0, mlmCount = 0, nspCorrect = 0, nspCount = 0;
  for (const batch of batches) {
    const s = engine.evaluate(batch);
    loss += s.loss;
    mlmLoss += (s.mlmLoss ?? s.loss) * (s.mlmCount ?? 1);
    mlmCorrect += s.mlmCorrect ?? 0;
    mlmCount += s.mlmCount ?? 0;
    nspCorrect += s.nspCorrect ?? 0;
    nspCount += s.nspCount ?? 0;
  }
  const meanMlm = mlmCount ? mlmLoss / mlmCount : NaN;
  return {
    loss: loss / batches.length,
    mlm_accuracy: mlmCount ? mlmCorrect / mlmCount : 0,
    // An MLM-only job has no NSP to score.
    ...(nspCount ? { nsp_accuracy: nspCorrect / nspCount } : {}),
    perplexity: Math.exp(meanMlm),
  };
}

export async function runPretrainJob(rawSpec: PretrainJobSpec, ctx: TrainerJobContext): Promise<JobOutcome> {
  const spec = resolvePretrainSpec(rawSpec);
  const { store } = ctx;
  const set = await ShardSet.open(store, spec.shards);
  const manifest = set.manifest;
  const vocab = await readVocab(store, set);
  const T = manifest.settings.maxSeqLength;
  const B = spec.batchSize;
  const packed = !!(manifest.settings as { packed?: boolean }).packed;
  const objective: PretrainObjective = spec.objective ?? (packed ? "mlm" : "mlm-nsp");
  if (objective === "mlm-nsp" && packed) {
    throw new InvalidArgument(
      `pretrain.objective mlm-nsp needs sentence pairs, and shards ${spec.shards} are packed (one segment per row, no NSP labels): use objective mlm, or shards built without --packed`,
    );
  }
  let short: { set: ShardSet; T: number; B: number; fraction: number } | undefined;
  if (spec.shortShards) {
    const shortSet = await ShardSet.open(store, spec.shortShards);
    const Ts = shortSet.manifest.settings.maxSeqLength;
    if (shortSet.manifest.vocab.sha256 !== manifest.vocab.sha256) {
      throw new InvalidArgument(
        `pretrain.short_shards ${spec.shortShards} were built with vocab ${shortSet.manifest.vocab.name}, shards ${spec.shards} with ${manifest.vocab.name}: both phases need the same vocab`,
      );
    }
    if (Ts >= T) {
      throw new InvalidArgument(
        `pretrain.short_shards ${spec.shortShards} have seq_len ${Ts}, not shorter than shards ${spec.shards} (${T})`,
      );
    }
    if (objective === "mlm-nsp" && (shortSet.manifest.settings as { packed?: boolean }).packed) {
      throw new InvalidArgument(
        `pretrain.objective mlm-nsp needs sentence pairs, and short_shards ${spec.shortShards} are packed: use objective mlm`,
      );
    }
    // As many tokens per step as the main phase, so the step's cost and the learning rate's meaning stay put.
    short = {
      set: shortSet,
      T: Ts,
      B: Math.max(1, Math.round((B * T) / Ts)),
      fraction: spec.shortFraction ?? 0.5,
    };
  }
  const budget = spec.budgetSeconds
    ? {
      seconds: spec.budgetSeconds,
      peakLearningRate: spec.learningRate,
      warmupFraction: spec.warmupFraction,
    }
    : undefined;

  let config = pretrainConfig(spec, set);
  const head: HeadSpec = { task: "pretrain" };
  let initial = initWeights(config, head, spec.seed);
  let initRef: { name: string; version: string; prefix: string; sha256?: string } | undefined;
  if (spec.initModel) {
    const base = await loadModel(store, spec.initModel, {
      head,
      seed: spec.seed,
      field: "pretrain.init_model",
    });
    if (base.config.vocab_size !== config.vocab_size || base.config.hidden_size !== config.hidden_size) {
      throw new InvalidArgument(
        `pretrain.init_model ${base.name}/${base.version} (vocab_size ${base.config.vocab_size}, hidden_size ${base.config.hidden_size}) does not fit the config (vocab_size ${config.vocab_size}, hidden_size ${config.hidden_size})`,
      );
    }
    config = { ...base.config, ...{ id2label: undefined, label2id: undefined } };
    delete config.id2label;
    delete config.label2id;
    initial = base.weights;
    initRef = { name: base.name, version: base.version, prefix: base.prefix };
  }

  const trainConfig = spec.dropout === undefined
    ? config
    : { ...config, hidden_dropout_prob: spec.dropout, attention_probs_dropout_prob: spec.dropout };
  const engine = await createJobEngine({
    config: trainConfig,
    head,
    optimizer: {
      lr: spec.learningRate,
      warmupSteps: budget ? 0 : spec.warmupSteps,
      // A budgeted job pins its rate from the time spent before every step; the step schedule goes unused.
      totalSteps: spec.steps || 1,
      weightDecay: spec.weightDecay,
      gradAccumSteps: spec.gradAccum,
    },
    seed: spec.seed,
    maxBatch: B,
    maxSeqLen: T,
    ...(ctx.backend ? { backend: ctx.backend } : {}),
    ...(ctx.threads ? { threads: ctx.threads } : {}),
    log: (message) => void ctx.emit({ type: "message", message }),
  });
  try {
    engine.setWeights(initial);
    const heldOutSet = await heldOut(set, B);
    const held = heldOutSet.instances;
    const exclude = new Set(heldOutSet.exclude ? held.map(instanceKey) : []);
    const evalBatches: Batch[] = [];
    for (let i = 0; i + B <= held.length; i += B) {
      const batch = pretrainBatch(held.slice(i, i + B), T, manifest.vocab.padId);
      if (objective !== "mlm-nsp") delete batch.nspLabels;
      evalBatches.push(batch);
    }
    await ctx.emit({
      type: "message",
      message:
        `pretraining ${engine.backend} ${
          spec.arch ?? "config"
        } L=${config.num_hidden_layers} C=${config.hidden_size}` +
        ` on ${manifest.instances} instances (${held.length} held out${
          heldOutSet.exclude ? ", skipped in training" : ""
        }), B=${B} T=${T}, objective ${objective}${
          spec.maskRate !== undefined ? `, mask rate ${spec.maskRate}` : ""
        }, ${
          budget
            ? `a budget of ${formatDuration(budget.seconds)} of training time${
              spec.steps ? ` (at most ${spec.steps} steps)` : ""
            }`
            : `${spec.steps} steps`
        }`,
    });
    const streamOptions = (rowLength: number) => ({
      seed: spec.seed,
      dynamicMasking: spec.maskRate !== undefined
        ? {
          maskedLmProb: spec.maskRate,
          // Room for the rate's share of a full row (as create_pretraining_data sizes max_predictions_per_seq).
          maxPredictionsPerSeq: Math.max(1, Math.ceil(rowLength * spec.maskRate)),
        }
        : spec.dynamicMasking,
    });
    const shardSource = (shardSet: ShardSet, rows: number, rowLength: number, skip: Set<string>) =>
      new ShardBatchSource(
        InstanceStream.over(shardSet, streamOptions(rowLength)),
        (cursor) => InstanceStream.over(shardSet, { ...streamOptions(rowLength), cursor }),
        skip,
        rows,
        rowLength,
        shardSet.manifest.vocab.padId,
        objective === "mlm-nsp",
      );
    const main = shardSource(set, B, T, exclude);
    const source: BatchSource = short
      ? new PhasedBatchSource(
        [shardSource(short.set, short.B, short.T, new Set()), main],
        short.fraction,
        () => {
          tilePositionEmbeddings(engine, short!.T, T);
          void ctx.emit({
            type: "message",
            message: `short phase done: ${spec.shards} from here on (B=${B} T=${T}); positions ${short!.T}-${
              T - 1
            } start as copies of 0-${short!.T - 1}`,
          });
        },
      )
      : main;
    if (short) {
      await ctx.emit({
        type: "message",
        message: `first ${Math.round(short.fraction * 100)}% of the ${
          budget ? "budget" : "steps"
        } on ${spec.shortShards} (B=${short.B} T=${short.T}, the same tokens per step), then ${spec.shards}`,
      });
    }
    const result = await runTrainingLoop({
      jobId: ctx.jobId,
      store,
      engine,
      source,
      totalSteps: spec.steps || Infinity,
      ...(budget ? { budget } : {}),
      ...(ctx.clock ? { clock: ctx.clock } : {}),
      gradAccumSteps: spec.gradAccum,
      checkpointEvery: spec.checkpointEvery,
      keepCheckpoints: spec.keepCheckpoints,
      logEvery: spec.logEvery,
      evalEvery: spec.evalEvery,
      ...(evalBatches.length
        ? { evaluate: () => Promise.resolve(evaluatePretrain(engine, evalBatches)) }
        : {}),
      emit: ctx.emit,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });

    const target = await publishTarget(store, ctx.jobId, spec.name);
    const finalEval = result.state.lastEval ?? {};
    const metrics: Record<string, number> = {
      ...Object.fromEntries(Object.entries(finalEval).map(([k, v]) => [`eval_${k}`, v])),
      train_loss: result.state.curves.loss?.at(-1)?.[1] ?? NaN,
      steps: result.step,
      tokens: result.state.tokens,
      tokens_per_s: result.tokensPerSecond,
      train_seconds: result.state.trainSeconds ?? 0,
    };
    const lineage = await lineageJson({
      artifact: { name: spec.name, version: target.version, prefix: `models/${spec.name}/${target.version}` },
      inputs: [
        {
          role: "shards",
          kind: "shards",
          name: spec.shards,
          prefix: `shards/${spec.shards}/`,
          sha256: await manifestHash(store, spec.shards),
        },
        {
          role: "vocab",
          kind: "vocab",
          name: manifest.vocab.name ?? "",
          sha256: manifest.vocab.sha256,
          prefix: `vocabs/${manifest.vocab.name}/`,
        },
        { role: "corpus", kind: "corpus", name: manifest.corpus.name, sha256: manifest.corpus.sha256 },
        ...(short
          ? [{
            role: "short_shards",
            kind: "shards",
            name: spec.shortShards!,
            prefix: `shards/${spec.shortShards}/`,
            sha256: await manifestHash(store, spec.shortShards!),
          }]
          : []),
        ...(initRef ? [{ role: "base_model", kind: "model", ...initRef }] : []),
      ],
      settings: {
        task: "pretrain",
        ...rawSpec,
        ...spec,
        backend: engine.backend,
        seq_len: T,
        objective,
        packed,
        held_out_instances: held.length,
      },
      jobId: ctx.jobId,
    });
    const published = await publishModel(store, {
      name: spec.name,
      version: target.version,
      config: configForHead(config, head),
      head,
      weights: result.weights,
      vocabText: vocab.vocabText,
      ...(vocab.tokenizerJson !== undefined ? { tokenizerJson: vocab.tokenizerJson } : {}),
      extraFiles: {
        "metrics.json": JSON.stringify(
          {
            task: "pretrain",
            ...metrics,
            curves: result.state.curves,
            eval_curves: result.state.evalCurves,
          },
          null,
          2,
        ) + "\n",
        "lineage.json": lineage,
        ...curvePictures(result.state),
      },
      metadata: { source: "trained", job_id: ctx.jobId, metrics },
    });
    return {
      model: publishedModelRef(published),
      metrics,
      tokensPerSecond: result.tokensPerSecond,
      steps: result.step,
    };
  } finally {
    engine.dispose();
  }
}

async function manifestHash(store: ObjectStore, shards: string): Promise<string> {
  return new Sha256().update(await store.get(manifestKey(`shards/${shards}`))).hex();
}

/**
 * A fine-tuning job: a model from the store (bertforge-pretrained or an imported Hugging Face checkpoint)
 * plus a task head, trained on a labelled data set, evaluated every epoch (or every `evalEvery` steps),
 * the best evaluation's weights kept and published.
 *
 * Settings left out fit the base model's size (defaults.ts: the BERT paper's recipe for base-sized models, the best
 * measured here for small ones), 10% linear warmup then linear decay.
 */
import {
  type Batch,
  type HeadSpec,
  headUsesPooler,
  type TaskKind,
  type Weights,
} from "../shared/engine/engine.ts";
import {
  type DataTask,
  encodeNerExamples,
  type EncodeReport,
  encodeTextExamples,
  epochBatches,
  LabelSet,
  type NerExample,
  type TextExample,
  type TextFeature,
  trainEvalSplit,
} from "../shared/data/mod.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import { initWeights } from "../shared/model/checkpoint.ts";
import { type BertConfig, parseConfig } from "../shared/model/config.ts";
import { FailedPrecondition, InvalidArgument } from "../shared/errors.ts";
import { confusionMatrixSvg } from "../shared/report/svg.ts";
import { type BatchSource, runTrainingLoop } from "./loop.ts";
import { evaluateFeatures, type EvaluationResult, type Feature, makeBatch } from "./evaluate.ts";
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
import { datasetInfo, readDataset } from "./datasets.ts";
import { publishTarget } from "./publish_target.ts";
import { type BaseFacts, finetuneDefaults } from "./defaults.ts";
import {
  checkCount,
  checkFitsMemory,
  checkMaxLength,
  checkReal,
  COUNT_LIMITS,
  type IntRange,
  RATE_LIMITS,
} from "../shared/model/limits.ts";
import type { ObjectStore } from "../shared/store/store.ts";

/**
 * What the defaults need to know of a base model, from its config.json and lineage.json alone (the weights are
 * loaded later, once the head is known).
 */
async function baseFacts(
  store: ObjectStore,
  ref: { name: string; version?: string },
): Promise<BaseFacts & { config: BertConfig; model: { name: string; version: string; prefix: string } }> {
  const model = await resolveModel(store, ref, "finetune.base");
  const config = parseConfig(await store.getText(`${model.prefix}/config.json`));
  const lineage = await store.getJson<{ settings?: { task?: string; objective?: string } }>(
    `${model.prefix}/lineage.json`,
  ).catch(() => null);
  // A Hugging Face import has no lineage and a pooler trained with NSP; bertforge records the objective.
  return { config, pretrainedPooler: lineage?.settings?.objective !== "mlm", model };
}

// qa has its engine head and data readers (issue 17) but no fine-tuning job yet.
export type FinetuneTask = Exclude<TaskKind, "pretrain" | "qa">;
export const FINETUNE_TASKS: FinetuneTask[] = ["classify", "multilabel", "pair", "ner"];

export interface FinetuneJobSpec {
  name: string;
  base: { name: string; version?: string };
  task: FinetuneTask;
  crf?: boolean;
  trainDataset: string;
  evalDataset?: string;
  epochs?: number;
  batchSize?: number;
  learningRate?: number;
  maxLength?: number;
  seed?: number;
  warmupRatio?: number;
  earlyStoppingPatience?: number;
  labels?: string[];
  threshold?: number;
  evalEvery?: number;
  checkpointEvery?: number;
  keepCheckpoints?: number;
  weightDecay?: number;
  logEvery?: number;
  /**
   * Re-initialise the pooler and the top K encoder layers before fine-tuning (Zhang et al. 2021, "Revisiting
   * Few-sample BERT Fine-tuning"): the top of a pretrained encoder is specialised to the MLM/NSP heads, and on
   * small data a fresh top trains to a better optimum than the pretrained one. 0 keeps every pretrained tensor.
   */
  reinitLayers?: number;
  /**
   * classify/multilabel: a text longer than `maxLength` is read as overlapping windows whose logits are
   * averaged, in training (each window a feature with the text's label), evaluation and serving (the model's
   * config records `bertforge_long_text: "windows"`), instead of being cut at `maxLength`.
   */
  windows?: boolean;
  /**
   * classify/multilabel/pair: "mean" reads the mean of the last layer over the real tokens instead of the pooler
   * (HeadSpec.pooling); the model's config records `bertforge_pooling: "mean"`. "cls" (the default) is HF's.
   */
  pooling?: "cls" | "mean";
}

/** The metric early stopping and "best checkpoint" watch, per task. */
export function selectionMetric(task: FinetuneTask): string {
  return task === "multilabel" ? "micro_f1" : task === "ner" ? "f1" : "accuracy";
}

export function validateFinetuneSpec(spec: FinetuneJobSpec): FinetuneJobSpec {
  validateName(spec.name, "name");
  validateName(spec.base?.name ?? "", "finetune.base.name");
  validateName(spec.trainDataset, "finetune.train_dataset");
  if (spec.evalDataset) validateName(spec.evalDataset, "finetune.eval_dataset");
  if (!FINETUNE_TASKS.includes(spec.task)) {
    throw new InvalidArgument(
      `finetune.task must be one of ${FINETUNE_TASKS.join(", ")}: got ${JSON.stringify(spec.task)}`,
    );
  }
  if (spec.crf && spec.task !== "ner") {
    throw new InvalidArgument(`finetune.crf is for task ner only: task is ${spec.task}`);
  }
  if (spec.windows && spec.task !== "classify" && spec.task !== "multilabel") {
    throw new InvalidArgument(
      `finetune.long_text_windows is for tasks classify and multilabel (ner always windows long sentences): task is ${spec.task}`,
    );
  }
  if (spec.pooling !== undefined && spec.pooling !== "cls" && spec.pooling !== "mean") {
    throw new InvalidArgument(`finetune.pooling must be cls or mean: got ${JSON.stringify(spec.pooling)}`);
  }
  if (spec.pooling === "mean" && spec.task === "ner") {
    throw new InvalidArgument(
      `finetune.pooling is for tasks classify, multilabel and pair (ner tags every token): task is ner`,
    );
  }
  // 0 or absent: the default (proto3 cannot tell 0 from unset); anything else within its limits (limits.ts).
  const count = (field: string, v: number | undefined, range: IntRange) => {
    if (v !== undefined && v !== 0) checkCount(`finetune.${field}`, v, range);
  };
  count("epochs", spec.epochs, COUNT_LIMITS.epochs);
  count("batch_size", spec.batchSize, COUNT_LIMITS.batchSize);
  count("max_length", spec.maxLength, COUNT_LIMITS.maxLength);
  count("early_stopping_patience", spec.earlyStoppingPatience, COUNT_LIMITS.patience);
  count("eval_every", spec.evalEvery, COUNT_LIMITS.interval);
  count("checkpoint_every", spec.checkpointEvery, COUNT_LIMITS.interval);
  count("keep_checkpoints", spec.keepCheckpoints, COUNT_LIMITS.keepCheckpoints);
  count("log_every", spec.logEvery, COUNT_LIMITS.interval);
  if (spec.seed !== undefined) checkCount("finetune.seed", spec.seed, COUNT_LIMITS.seed);
  if (spec.learningRate !== undefined && spec.learningRate !== 0) {
    checkReal("finetune.learning_rate", spec.learningRate, RATE_LIMITS.learningRate);
  }
  if (spec.weightDecay !== undefined) {
    checkReal("finetune.weight_decay", spec.weightDecay, RATE_LIMITS.weightDecay);
  }
  if (spec.reinitLayers !== undefined && !(Number.isInteger(spec.reinitLayers) && spec.reinitLayers >= 0)) {
    throw new InvalidArgument(
      `finetune.reinit_layers must be a non-negative integer: current value is ${spec.reinitLayers}`,
    );
  }
  if (spec.warmupRatio !== undefined) {
    checkReal("finetune.warmup_ratio", spec.warmupRatio, RATE_LIMITS.warmupFraction);
  }
  if (spec.labels?.length) checkLabels(spec.task, spec.labels);
  if (spec.threshold !== undefined && !(spec.threshold > 0 && spec.threshold < 1)) {
    throw new InvalidArgument(`finetune.threshold must be in (0, 1): current value is ${spec.threshold}`);
  }
  return spec;
}

/** Labels given in a spec: distinct, non-empty, of a sane length and number (at least 2 for one-of-K tasks). */
function checkLabels(task: FinetuneTask, labels: readonly string[]): void {
  const oneOfK = task === "classify" || task === "pair";
  checkCount("finetune.labels count", labels.length, {
    ...COUNT_LIMITS.labels,
    min: oneOfK ? COUNT_LIMITS.labels.min : 1,
  });
  labels.forEach((label, i) => {
    if (label.trim() === "") throw new InvalidArgument(`finetune.labels[${i}] must not be empty`);
    if (label.length > COUNT_LIMITS.labelChars.max) {
      throw new InvalidArgument(
        `finetune.labels[${i}] must be at most ${COUNT_LIMITS.labelChars.max} characters: it has ${label.length}`,
      );
    }
  });
  const twice = labels.find((label, i) => labels.indexOf(label) !== i);
  if (twice !== undefined) {
    throw new InvalidArgument(`finetune.labels must be distinct: ${JSON.stringify(twice)} is given twice`);
  }
}

/**
 * Data sets up to this size are parsed at submit for the job's task, exactly as the job will read them, so an
 * empty label or a missing second text fails the call instead of the job. Larger sets are checked from their
 * manifest (format, labels) only: parsing a few hundred MB would hold SubmitJob for seconds and the memory twice.
 */
const PARSE_AT_SUBMIT_BYTES = 8 << 20;

/**
 * What SubmitJob checks before a fine-tuning job is created, so a job that cannot run fails the call instead of
 * becoming a failed (and retried) job: the settings' limits, the base model (max_length, reinit_layers, its vocab),
 * each data set's format against the task and its labels (at least 2 for classify and pair), and the engine
 * against the node's memory.
 */
export async function checkFinetuneInputs(store: ObjectStore, spec: FinetuneJobSpec): Promise<void> {
  validateFinetuneSpec(spec);
  const facts = await baseFacts(store, spec.base);
  const { config, model } = facts;
  const base = `${model.name}/${model.version}`;
  const vocabLines =
    (await store.getText(`${model.prefix}/vocab.txt`)).split("\n").filter((l) => l !== "").length;
  if (vocabLines > config.vocab_size) {
    throw new InvalidArgument(
      `finetune.base ${base}: vocab.txt has ${vocabLines} tokens but config.json vocab_size is ${config.vocab_size}`,
    );
  }
  const defaults = finetuneDefaults(spec.task, facts);
  const maxLength = checkMaxLength(
    "finetune.max_length",
    spec.maxLength || defaults.maxLength,
    config.max_position_embeddings,
    base,
  );
  checkReinitLayers(spec.reinitLayers ?? 0, config.num_hidden_layers);
  const found = new Set<string>();
  for (
    const [field, name] of [["finetune.train_dataset", spec.trainDataset], [
      "finetune.eval_dataset",
      spec.evalDataset,
    ]]
  ) {
    if (!name) continue;
    const info = await datasetInfo(store, name, field!);
    const ner = info.format === "bio" || info.format === "cluener";
    if (ner !== (spec.task === "ner")) {
      throw new InvalidArgument(
        spec.task === "ner"
          ? `${field} ${name} is ${info.format} data: task ner needs BIO or CLUENER data`
          : `${field} ${name} is ${info.format} data, which holds tags: usable for task ner only (not ${spec.task})`,
      );
    }
    if (info.bytes <= PARSE_AT_SUBMIT_BYTES) await readDataset(store, name, spec.task, field);
    for (const label of info.labels) found.add(label);
  }
  if (!spec.labels?.length) {
    const needed = spec.task === "classify" || spec.task === "pair" ? 2 : 1;
    if (found.size < needed) {
      throw new InvalidArgument(
        `finetune.train_dataset ${spec.trainDataset} has ${
          found.size === 0 ? "no label" : `one label (${[...found][0]})`
        }: task ${spec.task} needs at least ${needed}`,
      );
    }
  }
  const labels = spec.labels?.length || found.size;
  checkFitsMemory("finetune", config, {
    batch: spec.batchSize || defaults.batchSize,
    seqLen: maxLength,
    task: "finetune",
    labels: spec.task === "ner" ? 2 * labels + 1 : labels,
    training: true,
  });
}

/** Re-initialising more layers than the base model has is a typo, not a request. */
function checkReinitLayers(layers: number, L: number): void {
  if (layers > L) {
    throw new InvalidArgument(`finetune.reinit_layers ${layers} exceeds the base model's ${L} layers`);
  }
}

/**
 * Features in a per-epoch seeded order grouped by length (epochBatches), each batch padded to its longest row,
 * the last partial batch of an epoch dropped.
 */
export class FeatureBatchSource implements BatchSource {
  #epoch = 0;
  #batch = 0;
  #order: Uint32Array[] = [];
  #orderEpoch = -1;
  readonly #lengths: Uint32Array;
  /** classify/pair classes: length grouping then mixes them (else a class that tracks length fills whole batches). */
  readonly #labels: Uint32Array | undefined;
  constructor(
    private readonly features: Feature[],
    private readonly head: HeadSpec,
    private readonly B: number,
    private readonly T: number,
    private readonly epochs: number,
    private readonly seed: number,
    private readonly ids: { cls: number; sep: number; pad: number },
  ) {
    this.#lengths = Uint32Array.from(features, (f) => f.ids.length);
    this.#labels = features.every((f) => "label" in f && !(f as TextFeature).multiLabel)
      ? Uint32Array.from(features, (f) => (f as TextFeature).label)
      : undefined;
  }
  #ensureOrder() {
    if (this.#orderEpoch === this.#epoch) return;
    this.#order = epochBatches(this.features.length, this.B, {
      seed: this.seed,
      epoch: this.#epoch,
      dropLast: true,
      lengths: this.#lengths,
      ...(this.#labels ? { labels: this.#labels } : {}),
    });
    this.#orderEpoch = this.#epoch;
  }
  next(): Promise<Batch | null> {
    this.#ensureOrder();
    if (this.#batch >= this.#order.length) {
      this.#epoch++;
      this.#batch = 0;
      this.#ensureOrder();
    }
    if (this.#epoch >= this.epochs || this.#order.length === 0) return Promise.resolve(null);
    const indices = this.#order[this.#batch++]!;
    const rows = Array.from(indices, (i) => this.features[i]!);
    return Promise.resolve(makeBatch(rows, this.head, this.B, this.T, this.ids));
  }
  cursor(): unknown {
    return { epoch: this.#epoch, batch: this.#batch };
  }
  restore(cursor: unknown): void {
    const c = cursor as { epoch: number; batch: number };
    this.#epoch = c.epoch;
    this.#batch = c.batch;
  }
  epoch(): number {
    return Math.min(this.#epoch, this.epochs - 1);
  }
}

/**
 * Replaces the pooler and the top `layers` encoder layers of `weights` (in place) with fresh draws from `seed`;
 * returns what was replaced, for the job's log, or "" when nothing was.
 */
export function reinitTop(
  weights: Weights,
  config: BertConfig,
  head: HeadSpec,
  layers: number,
  seed: number,
): string {
  if (layers === 0) return "";
  const L = config.num_hidden_layers;
  checkReinitLayers(layers, L);
  const fresh = initWeights(config, head, seed);
  const prefixes = ["bert.pooler."];
  for (let l = L - layers; l < L; l++) prefixes.push(`bert.encoder.layer.${l}.`);
  for (const [name, tensor] of fresh) {
    if (prefixes.some((p) => name.startsWith(p)) && weights.has(name)) weights.set(name, tensor);
  }
  const pooler = headUsesPooler(head) ? "the pooler and " : "";
  return `${pooler}encoder layers ${L - layers}..${L - 1}`;
}

export interface PreparedData {
  labels: LabelSet;
  train: Feature[];
  eval: Feature[];
  reports: { train: EncodeReport; eval: EncodeReport };
  hashes: { train: string; eval?: string };
}

function encode(
  task: FinetuneTask,
  examples: TextExample[] | NerExample[],
  tokenizer: WordPieceTokenizer,
  labels: LabelSet,
  maxLength: number,
  windows: boolean,
): { features: Feature[]; report: EncodeReport } {
  if (task === "ner") return encodeNerExamples(examples as NerExample[], tokenizer, labels, { maxLength });
  return encodeTextExamples(examples as TextExample[], tokenizer, labels, {
    task: task as Exclude<DataTask, "ner">,
    maxLength,
    windows,
  });
}

export async function runFinetuneJob(rawSpec: FinetuneJobSpec, ctx: TrainerJobContext): Promise<JobOutcome> {
  const spec = validateFinetuneSpec(rawSpec);
  const { store } = ctx;
  const seed = spec.seed ?? 42;
  // Settings left out fit the base model's size; the first event says which were chosen and why.
  const defaults = finetuneDefaults(spec.task, await baseFacts(store, spec.base));
  const maxLength = spec.maxLength || defaults.maxLength;
  const pooling = spec.task === "ner" ? undefined : spec.pooling ?? defaults.pooling;
  const chosen = [
    spec.learningRate ? "" : `lr ${defaults.learningRate}`,
    spec.batchSize ? "" : `batch ${defaults.batchSize}`,
    spec.epochs ? "" : `${defaults.epochs} epochs`,
    spec.maxLength ? "" : `max length ${defaults.maxLength}`,
    spec.pooling || !pooling ? "" : `${pooling} pooling`,
  ].filter(Boolean);
  await ctx.emit({
    type: "message",
    message: chosen.length
      ? `defaults for a ${defaults.why}: ${chosen.join(", ")} (--lr, --batch, --epochs, --max-length${
        pooling ? ", --pooling" : ""
      } override them)`
      : "every fine-tuning setting given: no defaults applied",
  });

  // Data first: its label set fixes the head's size.
  const train = await readDataset(store, spec.trainDataset, spec.task, "finetune.train_dataset");
  const evalData = spec.evalDataset
    ? await readDataset(store, spec.evalDataset, spec.task, "finetune.eval_dataset")
    : null;
  let trainExamples = train.examples as Array<TextExample | NerExample>;
  let evalExamples: Array<TextExample | NerExample>;
  if (evalData) evalExamples = evalData.examples;
  else {
    const split = trainEvalSplit(trainExamples, { evalFraction: 0.1, seed });
    trainExamples = split.train;
    evalExamples = split.eval;
  }
  let labels: LabelSet;
  if (spec.labels?.length) labels = new LabelSet(spec.labels);
  else if (spec.task === "ner") {
    labels = LabelSet.ofNerExamples([...trainExamples, ...evalExamples] as NerExample[]);
  } else labels = LabelSet.ofTextExamples([...trainExamples, ...evalExamples] as TextExample[]);
  if (spec.task !== "multilabel" && spec.task !== "ner" && labels.size < 2) {
    throw new InvalidArgument(
      `finetune.train_dataset ${spec.trainDataset} has only one label (${labels.labels[0]})`,
    );
  }
  const head: HeadSpec = {
    task: spec.task,
    numLabels: labels.size,
    ...(spec.crf ? { crf: true } : {}),
    ...(pooling === "mean" ? { pooling: "mean" as const } : {}),
  };

  const base = await loadModel(store, spec.base, { head, seed, field: "finetune.base" });
  const config = { ...base.config };
  const reinitialized = reinitTop(base.weights, config, head, spec.reinitLayers ?? 0, seed);
  checkMaxLength(
    "finetune.max_length",
    maxLength,
    config.max_position_embeddings,
    `${base.name}/${base.version}`,
  );
  const tokenizer = base.tokenizerJson
    ? WordPieceTokenizer.fromTokenizerJson(base.tokenizerJson)
    : WordPieceTokenizer.fromVocabText(base.vocabText);
  if (tokenizer.idToToken.length > config.vocab_size) {
    throw new InvalidArgument(
      `finetune.base ${base.name}/${base.version}: vocab.txt has ${tokenizer.idToToken.length} tokens but config.json vocab_size is ${config.vocab_size}`,
    );
  }

  const trainEnc = encode(
    spec.task,
    trainExamples as TextExample[] | NerExample[],
    tokenizer,
    labels,
    maxLength,
    !!spec.windows,
  );
  const evalEnc = encode(
    spec.task,
    evalExamples as TextExample[] | NerExample[],
    tokenizer,
    labels,
    maxLength,
    !!spec.windows,
  );
  if (trainEnc.features.length === 0) {
    throw new InvalidArgument(
      `finetune.train_dataset ${spec.trainDataset} holds no examples after the eval split`,
    );
  }
  const T = maxLength;
  const B = Math.min(spec.batchSize || defaults.batchSize, trainEnc.features.length);
  const epochs = spec.epochs || defaults.epochs;
  const stepsPerEpoch = Math.floor(trainEnc.features.length / B);
  const totalSteps = stepsPerEpoch * epochs;
  const lr = spec.learningRate || defaults.learningRate;
  const warmupSteps = Math.round(totalSteps * (spec.warmupRatio ?? 0.1));
  const ids = { cls: tokenizer.clsId, sep: tokenizer.sepId, pad: tokenizer.padId };

  const engine = await createJobEngine({
    config,
    head,
    optimizer: { lr, warmupSteps, totalSteps, weightDecay: spec.weightDecay ?? 0.01, gradAccumSteps: 1 },
    seed,
    maxBatch: B,
    maxSeqLen: T,
    ...(ctx.backend ? { backend: ctx.backend } : {}),
    ...(ctx.threads ? { threads: ctx.threads } : {}),
    log: (message) => void ctx.emit({ type: "message", message }),
  });
  try {
    engine.setWeights(base.weights);
    const describe = (what: string, r: EncodeReport) =>
      `${what}: ${r.examples} examples, ` +
      (r.windowed !== undefined
        ? `${r.windowed} longer than ${r.maxLength} tokens split into overlapping windows (${r.windows} features)`
        : `${r.truncated} truncated to ${r.maxLength} tokens`) +
      (r.entitiesLost ? `, ${r.entitiesLost} of ${r.entities} entities lost to alignment` : "") +
      (r.samples.length ? ` (e.g. ${r.samples.slice(0, 3).join(", ")})` : "");
    await ctx.emit({ type: "message", message: describe("train", trainEnc.report) });
    await ctx.emit({ type: "message", message: describe("eval", evalEnc.report) });
    await ctx.emit({
      type: "message",
      message:
        `fine-tuning ${base.name}/${base.version} for ${spec.task}${spec.crf ? " + CRF" : ""}${
          head.pooling ? `, ${head.pooling} pooling` : ""
        } (${labels.size} labels) on ` +
        `${engine.backend}: ${epochs} epochs x ${stepsPerEpoch} steps, B=${B} T=${T} lr=${lr} warmup=${warmupSteps}` +
        (base.initialized?.length ? `; new head tensors: ${base.initialized.join(", ")}` : "") +
        (reinitialized ? `; re-initialised ${reinitialized}` : ""),
    });
    if (totalSteps === 0) throw new FailedPrecondition("finetune: no full batch of training data");

    const evalOptions = { B, T, ids, ...(spec.threshold !== undefined ? { threshold: spec.threshold } : {}) };
    let lastReport: EvaluationResult | null = null;
    const evaluate = () => {
      lastReport = evaluateFeatures(engine, head, evalEnc.features, labels.labels, evalOptions);
      return Promise.resolve(lastReport.metrics);
    };
    const metric = selectionMetric(spec.task);
    const result = await runTrainingLoop({
      jobId: ctx.jobId,
      store,
      engine,
      source: new FeatureBatchSource(trainEnc.features, head, B, T, epochs, seed, ids),
      totalSteps,
      checkpointEvery: spec.checkpointEvery || stepsPerEpoch,
      keepCheckpoints: spec.keepCheckpoints || 2,
      logEvery: spec.logEvery || Math.max(1, Math.round(totalSteps / 200)),
      evalEvery: spec.evalEvery || stepsPerEpoch,
      ...(evalEnc.features.length ? { evaluate } : {}),
      ...(evalEnc.features.length
        ? { earlyStopping: { metric, mode: "max" as const, patience: spec.earlyStoppingPatience ?? 0 } }
        : {}),
      emit: ctx.emit,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });

    // Score what gets published (the best weights), so metrics.json describes the files beside it.
    engine.setWeights(result.weights);
    const final = evalEnc.features.length
      ? evaluateFeatures(engine, head, evalEnc.features, labels.labels, evalOptions)
      : null;
    const metrics: Record<string, number> = {
      ...(final?.metrics ?? {}),
      train_loss: result.state.curves.loss?.at(-1)?.[1] ?? NaN,
      steps: result.step,
      best_step: result.state.best?.step ?? result.step,
      eval_examples: evalEnc.report.examples,
      train_examples: trainEnc.report.examples,
      tokens_per_s: result.tokensPerSecond,
    };
    const target = await publishTarget(store, ctx.jobId, spec.name);
    const pictures = curvePictures(result.state);
    if (final?.confusion) {
      pictures["confusion.svg"] = confusionMatrixSvg(
        final.confusion,
        [...labels.labels],
        `Confusion matrix (${evalEnc.features.length} eval examples)`,
      );
    }
    const lineage = await lineageJson({
      artifact: { name: spec.name, version: target.version, prefix: `models/${spec.name}/${target.version}` },
      inputs: [
        {
          role: "base_model",
          kind: "model",
          name: base.name,
          version: base.version,
          prefix: `${base.prefix}/`,
          sha256: base.manifest.parts.find((p) => p.name === "model.safetensors")?.sha256 ?? "",
        },
        {
          role: "train_dataset",
          kind: "dataset",
          name: spec.trainDataset,
          sha256: train.info.sha256,
          prefix: `datasets/${spec.trainDataset}/`,
        },
        ...(evalData
          ? [{
            role: "eval_dataset",
            kind: "dataset",
            name: spec.evalDataset!,
            sha256: evalData.info.sha256,
            prefix: `datasets/${spec.evalDataset}/`,
          }]
          : []),
        { role: "vocab", kind: "vocab", name: `${base.name}/${base.version}`, sha256: tokenizer.hash() },
      ],
      settings: {
        ...spec,
        seed,
        max_length: maxLength,
        batch_size: B,
        epochs,
        learning_rate: lr,
        warmup_steps: warmupSteps,
        total_steps: totalSteps,
        backend: engine.backend,
        eval_split: evalData ? "eval_dataset" : "10% of train_dataset",
        weights: result.weightsFrom,
      },
      jobId: ctx.jobId,
    });
    const configOut = {
      ...config,
      bertforge_max_length: maxLength,
      ...(spec.windows ? { bertforge_long_text: "windows" } : {}),
      ...(spec.task === "multilabel"
        ? { bertforge_thresholds: labels.labels.map(() => spec.threshold ?? 0.5) }
        : {}),
    };
    const published = await publishModel(store, {
      name: spec.name,
      version: target.version,
      config: configOut,
      head,
      labels: [...labels.labels],
      weights: result.weights,
      vocabText: tokenizer.vocabText(),
      tokenizerJson: base.tokenizerJson ?? tokenizer.toTokenizerJson(),
      extraFiles: {
        "metrics.json": JSON.stringify(
          {
            task: spec.task,
            crf: !!spec.crf,
            ...metrics,
            per_label: final?.perLabel ?? {},
            labels: labels.labels,
            confusion_matrix: final?.confusion ?? null,
            curves: result.state.curves,
            eval_curves: result.state.evalCurves,
          },
          null,
          2,
        ) + "\n",
        "lineage.json": lineage,
        ...pictures,
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

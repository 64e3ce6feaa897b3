/**
 * TrainerService handlers (protos/bertforge/v1/trainer.proto): thin translations between proto messages
 * and the trainer library (pretrain.ts, finetune.ts, models.ts, datasets.ts, evaluate.ts). Jobs run on the
 * shared JobManager: one at a time, the rest queued, and every unfinished job resumed from its last
 * complete checkpoint when the service starts again.
 */
import { type JobEvent, type JobEventInput, JobManager, type JobRecord } from "../shared/jobs/jobs.ts";
import { jobEventMessage, jobMessage, jobProgressMessage } from "../shared/jobs/proto.ts";
import { jobHandlers } from "../shared/jobs/handlers.ts";
import type { CallContext, Handlers, Message } from "../shared/rpc/serve.ts";
import { pageOf } from "../shared/rpc/paging.ts";
import { type ReceivedUpload, receiveUpload } from "../shared/rpc/streams.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import type { StoreSettings } from "../shared/store/mod.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../shared/errors.ts";
import { type Logger } from "../shared/config/log.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import {
  encodeNerExamples,
  encodeTextExamples,
  LabelSet,
  type NerExample,
  type TextExample,
} from "../shared/data/mod.ts";
import { headFromConfig, loadModelDir } from "../shared/model/checkpoint.ts";
import { type HeadSpec, sentencePooling } from "../shared/engine/engine.ts";
import {
  checkPretrainInputs,
  type PretrainJobSpec,
  resolvePretrainSpec,
  runPretrainJob,
} from "./pretrain.ts";
import {
  checkFinetuneInputs,
  type FinetuneJobSpec,
  type FinetuneTask,
  runFinetuneJob,
  validateFinetuneSpec,
} from "./finetune.ts";
import { createJobEngine, formatEvent, type JobOutcome, type TrainerJobContext } from "./jobs.ts";
import { runJobInWorker } from "./job_thread.ts";
import type { TrainerEvent } from "./loop.ts";
import { freshVersion, listModels, loadModel, publishModel, resolveModel } from "./models.ts";
import { modelPrefix, validateName } from "../shared/model/registry.ts";
import { readDataset, storeDataset } from "./datasets.ts";
import { evaluateFeatures, type ExampleOutcome, mistakesOf } from "./evaluate.ts";
import { deleteArtifact, readManifest } from "../shared/store/publish.ts";
import { checkCount, checkFitsMemory, checkMaxLength, COUNT_LIMITS } from "../shared/model/limits.ts";
import { join } from "node:path";
import { createHash } from "node:crypto";

const TASK_ENUM: Record<string, FinetuneTask | "pretrain"> = {
  TASK_TYPE_PRETRAIN: "pretrain",
  TASK_TYPE_CLASSIFY: "classify",
  TASK_TYPE_MULTILABEL: "multilabel",
  TASK_TYPE_PAIR: "pair",
  TASK_TYPE_NER: "ner",
};
const TASK_NAME: Record<string, string> = Object.fromEntries(
  Object.entries(TASK_ENUM).map(([k, v]) => [v, k]),
);

/** A stored job spec: what SubmitJob asked for, with the fields the library takes. */
export type StoredSpec =
  | { kind: "pretrain"; name: string; backend?: string; requestId?: string; pretrain: PretrainJobSpec }
  | { kind: "finetune"; name: string; backend?: string; requestId?: string; finetune: FinetuneJobSpec };

export interface TrainerOptions {
  store: ObjectStore;
  /** Default engine backend for jobs that do not name one. */
  backend?: string;
  threads?: number;
  log?: Logger;
  /** Jobs run at once. @default 1 */
  concurrency?: number;
  /** Resumes of one job after crashes before it is failed instead. @default 100 */
  maxAttempts?: number;
  /** Largest upload (data set, model import), in bytes. @default DEFAULT_MAX_UPLOAD_BYTES (rpc/streams.ts) */
  maxUploadBytes?: number;
  /**
   * Where jobs run. `worker` (the default when `storeSettings` is given): each job in its own thread, which
   * opens the store from `storeSettings`, so a job's steps never stall this thread's RPCs. `in-process`: on
   * this thread, for tests and benches that inject what cannot cross a thread (an engine factory through
   * `setEngineFactory`, a store object of their own).
   */
  jobsIn?: "worker" | "in-process";
  /** The settings `store` was opened from; a job worker opens its own store from them. */
  storeSettings?: StoreSettings;
}

function opt<T>(value: T | null | undefined): T | undefined {
  return value === null || value === undefined ? undefined : value;
}

function num(value: unknown): number {
  return typeof value === "string" ? Number(value) : (value as number) ?? 0;
}

/**
 * A proto3 number that 0 leaves to the default: undefined for 0 (and unset), else the value as sent. NaN stays
 * NaN, so the limits refuse it; a test for truthiness turned it into the default.
 */
function given(value: unknown): number | undefined {
  const n = num(value);
  return n === 0 ? undefined : n;
}

/** SubmitJobRequest → the spec the job will run with (defaults left to the job, validated now). */
export function specFromRequest(request: Message): StoredSpec {
  const name = request.name ?? "";
  validateName(name, "name");
  const backend = request.backend || undefined;
  const requestId = request.request_id || undefined;
  const common = { name, ...(backend ? { backend } : {}), ...(requestId ? { requestId } : {}) };
  if (request.pretrain) {
    const p = request.pretrain;
    const spec: PretrainJobSpec = {
      name,
      shards: p.shards ?? "",
      steps: num(p.steps),
      ...(p.arch ? { arch: p.arch } : {}),
      ...(p.config_json ? { configJson: p.config_json } : {}),
      ...(num(p.batch_size) ? { batchSize: num(p.batch_size) } : {}),
      ...(given(p.learning_rate) !== undefined ? { learningRate: given(p.learning_rate) } : {}),
      ...(opt(p.warmup_steps) !== undefined ? { warmupSteps: num(p.warmup_steps) } : {}),
      ...(opt(p.seed) !== undefined ? { seed: num(p.seed) } : {}),
      ...(num(p.grad_accum) ? { gradAccum: num(p.grad_accum) } : {}),
      ...(num(p.checkpoint_every) ? { checkpointEvery: num(p.checkpoint_every) } : {}),
      ...(num(p.eval_every) ? { evalEvery: num(p.eval_every) } : {}),
      ...(num(p.keep_checkpoints) ? { keepCheckpoints: num(p.keep_checkpoints) } : {}),
      ...(opt(p.weight_decay) !== undefined ? { weightDecay: p.weight_decay } : {}),
      ...(p.init_model?.name
        ? { initModel: { name: p.init_model.name, version: p.init_model.version || undefined } }
        : {}),
      ...(p.dynamic_masking ? { dynamicMasking: true } : {}),
      ...(given(p.budget_seconds) !== undefined ? { budgetSeconds: given(p.budget_seconds) } : {}),
      ...(opt(p.warmup_fraction) !== undefined ? { warmupFraction: p.warmup_fraction } : {}),
      ...(p.objective ? { objective: p.objective } : {}),
      ...(opt(p.mask_rate) !== undefined ? { maskRate: p.mask_rate } : {}),
      ...(opt(p.dropout) !== undefined ? { dropout: p.dropout } : {}),
      ...(p.short_shards ? { shortShards: p.short_shards } : {}),
      ...(opt(p.short_fraction) !== undefined ? { shortFraction: p.short_fraction } : {}),
    };
    if (spec.arch && spec.configJson) {
      throw new InvalidArgument("pretrain: give arch or config_json, not both");
    }
    resolvePretrainSpec(spec); // throws InvalidArgument naming the field
    return { kind: "pretrain", ...common, pretrain: spec };
  }
  if (request.finetune) {
    const f = request.finetune;
    const task = TASK_ENUM[f.task ?? ""];
    if (!task || task === "pretrain") {
      throw new InvalidArgument(`finetune.task must be CLASSIFY, MULTILABEL, PAIR or NER: got ${f.task}`);
    }
    const spec: FinetuneJobSpec = {
      name,
      base: { name: f.base?.name ?? "", ...(f.base?.version ? { version: f.base.version } : {}) },
      task,
      trainDataset: f.train_dataset ?? "",
      ...(f.crf ? { crf: true } : {}),
      ...(f.eval_dataset ? { evalDataset: f.eval_dataset } : {}),
      ...(num(f.epochs) ? { epochs: num(f.epochs) } : {}),
      ...(num(f.batch_size) ? { batchSize: num(f.batch_size) } : {}),
      ...(given(f.learning_rate) !== undefined ? { learningRate: given(f.learning_rate) } : {}),
      ...(num(f.max_length) ? { maxLength: num(f.max_length) } : {}),
      ...(opt(f.seed) !== undefined ? { seed: num(f.seed) } : {}),
      ...(opt(f.warmup_ratio) !== undefined ? { warmupRatio: f.warmup_ratio } : {}),
      ...(num(f.early_stopping_patience) ? { earlyStoppingPatience: num(f.early_stopping_patience) } : {}),
      ...(f.labels?.length ? { labels: [...f.labels] } : {}),
      ...(opt(f.threshold) !== undefined ? { threshold: f.threshold } : {}),
      ...(num(f.eval_every) ? { evalEvery: num(f.eval_every) } : {}),
      ...(num(f.checkpoint_every) ? { checkpointEvery: num(f.checkpoint_every) } : {}),
      ...(num(f.reinit_layers) ? { reinitLayers: num(f.reinit_layers) } : {}),
      ...(f.long_text_windows ? { windows: true } : {}),
      ...(f.pooling ? { pooling: f.pooling } : {}),
    };
    validateFinetuneSpec(spec);
    return { kind: "finetune", ...common, finetune: spec };
  }
  throw new InvalidArgument("spec must be pretrain or finetune");
}

/** A trainer event as a JobManager event (type, message, progress, data). */
export function toJobEvent(event: TrainerEvent): JobEventInput {
  const message = formatEvent(event);
  switch (event.type) {
    case "step":
      return {
        type: "progress",
        message,
        progress: { done: event.step, total: event.totalSteps, unit: "steps" },
        data: event,
      };
    case "eval":
      return { type: "eval", message, data: event };
    case "checkpoint":
      return { type: "checkpoint", message, data: event };
    default:
      return { type: "log", message, data: event };
  }
}

function modelRef(
  model: { name: string; version: string; prefix?: string; sha256?: string; sizeBytes?: number },
) {
  return {
    kind: "ARTIFACT_KIND_MODEL",
    name: model.name,
    version: model.version,
    prefix: `${model.prefix ?? modelPrefix(model.name, model.version)}/`,
    sha256: model.sha256 ?? "",
    size_bytes: String(model.sizeBytes ?? 0),
  };
}

/** A stored job event → common.proto JobEvent. */
export function protoEvent(jobId: string, event: JobEvent, state: string, startedAt?: string): Message {
  const data = (event.data ?? {}) as Record<string, unknown> & Partial<TrainerEvent>;
  const out = jobEventMessage(jobId, event, state, { startedAt, unit: "steps" });
  if (data.type === "step") {
    out.loss = data.loss;
    out.learning_rate = data.learningRate;
    out.tokens_per_s = data.tokensPerSecond;
    out.eta_seconds = data.etaSeconds;
    out.epoch = data.epoch;
    if (data.mlmAccuracy !== undefined) out.mlm_accuracy = data.mlmAccuracy;
    if (data.nspAccuracy !== undefined) out.nsp_accuracy = data.nspAccuracy;
    if (data.accuracy !== undefined) out.metrics.accuracy = data.accuracy;
    if (data.budgetSeconds !== undefined) out.metrics.budget_seconds = data.budgetSeconds;
    if (data.trainSeconds !== undefined) out.metrics.train_seconds = data.trainSeconds;
  } else if (data.type === "eval") {
    out.step = String(data.step);
    const metrics = data.metrics as Record<string, number>;
    for (const [k, v] of Object.entries(metrics)) {
      if (Number.isFinite(v)) out.metrics[k === "loss" ? "eval_loss" : k] = v;
    }
    if (metrics.mlm_accuracy !== undefined) out.mlm_accuracy = metrics.mlm_accuracy;
    if (metrics.nsp_accuracy !== undefined) out.nsp_accuracy = metrics.nsp_accuracy;
  } else if (data.type === "checkpoint") {
    out.step = String(data.step);
    out.checkpoint = {
      kind: "ARTIFACT_KIND_CHECKPOINT",
      name: jobId,
      version: String(data.step),
      prefix: data.key,
    };
  } else if (event.type === "artifact" && data.model) {
    out.artifact = modelRef(data.model as JobOutcome["model"]);
  }
  return out;
}

export class Trainer {
  readonly store: ObjectStore;
  readonly manager: JobManager;
  readonly #options: TrainerOptions;
  readonly #uploadLimits: { maxBytes?: number };
  readonly #inWorker: boolean;
  readonly #requestIds = new Map<string, string>();
  readonly #lastProgress = new Map<string, Message>();

  constructor(options: TrainerOptions) {
    this.store = options.store;
    this.#options = options;
    this.#uploadLimits = options.maxUploadBytes ? { maxBytes: options.maxUploadBytes } : {};
    this.#inWorker = (options.jobsIn ?? (options.storeSettings ? "worker" : "in-process")) === "worker";
    if (this.#inWorker && !options.storeSettings) {
      throw new TypeError(
        'Cannot run trainer jobs in a worker without storeSettings: give them, or jobsIn "in-process"',
      );
    }
    this.manager = new JobManager(options.store, { concurrency: options.concurrency ?? 1 });
    const maxAttempts = options.maxAttempts ?? 100;
    this.manager.register<StoredSpec, JobOutcome>("pretrain", {
      run: (ctx) => this.#run(ctx.jobId, ctx.spec, ctx.signal, ctx.emit),
      onInterrupted: "resume",
      maxAttempts,
    });
    this.manager.register<StoredSpec, JobOutcome>("finetune", {
      run: (ctx) => this.#run(ctx.jobId, ctx.spec, ctx.signal, ctx.emit),
      onInterrupted: "resume",
      maxAttempts,
    });
  }

  /** Takes over the jobs a previous process left unfinished (they resume from their checkpoints). */
  recover(): ReturnType<JobManager["recover"]> {
    return this.manager.recover();
  }

  async #run(
    jobId: string,
    spec: StoredSpec,
    signal: AbortSignal,
    emit: (event: JobEventInput) => Promise<void>,
  ): Promise<JobOutcome> {
    const ctx: TrainerJobContext = {
      jobId,
      store: this.store,
      signal,
      emit: (event) => {
        this.#options.log?.debug(formatEvent(event), { job: jobId });
        const jobEvent = toJobEvent(event);
        // The latest step (with the latest evaluation's metrics) is kept for GetJob/ListJobs, so a list
        // view shows loss, throughput and ETA without watching.
        const time = new Date().toISOString();
        if (event.type === "step") {
          const previous = this.#lastProgress.get(jobId);
          const current = protoEvent(jobId, { ...jobEvent, seq: 0, time }, "RUNNING");
          current.metrics = { ...previous?.metrics, ...current.metrics };
          this.#lastProgress.set(jobId, current);
        } else if (event.type === "eval") {
          const previous = this.#lastProgress.get(jobId);
          const metrics = protoEvent(jobId, { ...jobEvent, seq: 0, time }, "RUNNING").metrics;
          if (previous) previous.metrics = { ...previous.metrics, ...metrics };
        }
        return emit(jobEvent);
      },
      ...(spec.backend || this.#options.backend ? { backend: spec.backend || this.#options.backend } : {}),
      ...(this.#options.threads ? { threads: this.#options.threads } : {}),
    };
    const outcome = this.#inWorker
      ? await runJobInWorker({
        jobId,
        spec,
        store: this.#options.storeSettings!,
        ...(ctx.backend ? { backend: ctx.backend } : {}),
        ...(ctx.threads ? { threads: ctx.threads } : {}),
        signal,
        emit: async (event) => await ctx.emit(event),
      })
      : spec.kind === "pretrain"
      ? await runPretrainJob(spec.pretrain, ctx)
      : await runFinetuneJob(spec.finetune, ctx);
    await emit({
      type: "artifact",
      message: `published ${outcome.model.prefix}/`,
      data: { model: outcome.model },
    });
    this.#options.log?.info("job published a model", { job: jobId, model: outcome.model.prefix });
    return outcome;
  }

  /**
   * Checks what a spec names exists and fits (limits, data, memory), so a typo or an impossible job fails SubmitJob
   * instead of becoming a failed job.
   */
  #checkInputs(spec: StoredSpec): Promise<void> {
    return spec.kind === "pretrain"
      ? checkPretrainInputs(this.store, spec.pretrain)
      : checkFinetuneInputs(this.store, spec.finetune);
  }

  async submit(request: Message): Promise<JobRecord> {
    const spec = specFromRequest(request);
    if (spec.requestId) {
      const known = this.#requestIds.get(spec.requestId) ?? await this.#findRequest(spec.requestId);
      if (known) return await this.manager.get(known);
    }
    await this.#checkInputs(spec);
    const id = await this.manager.submit(spec.kind, spec);
    if (spec.requestId) {
      this.#requestIds.set(spec.requestId, id);
      // Remembered in the store too, so a retry after a trainer restart still finds the first job.
      await this.store.putJson(requestKey(spec.requestId), { jobId: id }).catch(() => {});
    }
    return await this.manager.get(id);
  }

  async #findRequest(requestId: string): Promise<string | undefined> {
    const stored = await this.store.getJson<{ jobId?: string }>(requestKey(requestId)).catch(() => null);
    return stored?.jobId;
  }

  async jobMessage(record: JobRecord): Promise<Message> {
    const spec = await this.manager.getSpec<StoredSpec>(record.id).catch(() => null);
    const result = record.result as JobOutcome | undefined;
    const progress = this.#lastProgress.get(record.id) ?? jobProgressMessage(record, "steps");
    let queuePosition = 0;
    if (record.state === "QUEUED") {
      const { jobs } = await this.manager.list({ state: "QUEUED", pageSize: 1000 });
      const queued = jobs.map((j) => j.id).sort();
      queuePosition = queued.indexOf(record.id) + 1;
    }
    return {
      ...jobMessage(record, spec, { unit: "steps", progress }),
      outputs: result?.model ? [modelRef(result.model)] : [],
      queue_position: queuePosition,
    };
  }

  handlers(): Handlers {
    return {
      SubmitJob: async (request: Message) => ({ job: await this.jobMessage(await this.submit(request)) }),
      ...jobHandlers({
        manager: this.manager,
        jobMessage: (record) => this.jobMessage(record),
        eventMessage: protoEvent,
        listKind: (requested) => requested || undefined,
        listKeep: (record) => record.kind === "pretrain" || record.kind === "finetune",
      }),
      ListModels: async (request: Message) => {
        const models = await listModels(this.store, request.name || undefined);
        const { items, page } = pageOf(models, request.page);
        return {
          models: items.map((m) =>
            modelSummary(m.name, m.version, m.config, m.manifest.metadata, m.sizeBytes, m.manifest.createdAt)
          ),
          page,
        };
      },
      UploadDataset: async (requests: AsyncIterable<Message>) => {
        // Streamed to the store as it arrives, bounded by the upload cap: never whole in memory.
        const upload = await receiveUpload(requests, this.#uploadLimits);
        const files = upload.files();
        const first = await files.next();
        if (first.done) throw new InvalidArgument("upload holds no file chunk");
        const info = await storeDataset(this.store, {
          name: upload.header.name ?? "",
          file: first.value.path,
          bytes: first.value.stream,
          ...(upload.header.format ? { format: upload.header.format } : {}),
          overwrite: !!upload.header.overwrite,
          ...(upload.header.description ? { description: upload.header.description } : {}),
        });
        if (!(await files.next()).done) {
          // The data set was stored from the first file; a second one makes the whole upload wrong.
          await deleteArtifact(this.store, `datasets/${info.name}`).catch(() => {});
          throw new InvalidArgument("a data set is one file: the upload holds more");
        }
        return {
          dataset: {
            kind: "ARTIFACT_KIND_DATASET",
            name: info.name,
            prefix: `datasets/${info.name}/`,
            sha256: info.sha256,
            size_bytes: String(info.sizeBytes),
            version: "",
          },
          format: info.format,
          examples: String(info.examples),
          labels: info.labels,
        };
      },
      ImportModel: async (requests: AsyncIterable<Message>) => ({
        model: await this.importModel(await receiveUpload(requests, this.#uploadLimits)),
      }),
      ExportModel: (request: Message, ctx: CallContext) => this.exportModel(request, ctx),
      Evaluate: (request: Message) => this.evaluate(request),
    };
  }

  async importModel(upload: ReceivedUpload): Promise<Message> {
    const name = validateName(upload.header.name ?? "", "header.name");
    const dir = await Deno.makeTempDir({ prefix: "bertforge-import-" });
    try {
      const names: string[] = [];
      // receiveUpload checked each path (relative, no ".."); each file streams to disk, never whole in memory.
      for await (const file of upload.files()) {
        const base = file.path.split("/").pop()!;
        names.push(base);
        await Deno.writeFile(join(dir, base), file.stream);
      }
      for (const required of ["config.json", "vocab.txt"]) {
        if (!names.includes(required)) {
          throw new InvalidArgument(`import: ${required} is missing from the upload`);
        }
      }
      if (!names.includes("model.safetensors")) {
        throw new InvalidArgument(
          names.includes("pytorch_model.bin")
            ? "import: model.safetensors is missing; pytorch_model.bin is not read: convert it first (python -c \"from transformers import AutoModel; AutoModel.from_pretrained('DIR').save_pretrained('OUT', safe_serialization=True)\")"
            : "import: model.safetensors is missing from the upload",
        );
      }
      let model;
      try {
        model = await loadModelDir(dir);
      } catch (error) {
        if (error instanceof NotFound) throw new InvalidArgument(`import: ${error.message}`);
        throw error;
      }
      const vocabSize = model.vocabText.split("\n").filter((l, i, a) => l !== "" || i < a.length - 1).length;
      if (vocabSize > model.config.vocab_size) {
        throw new InvalidArgument(
          `import: vocab.txt has ${vocabSize} tokens but config.json vocab_size is ${model.config.vocab_size}`,
        );
      }
      const head: HeadSpec = model.head ?? { task: "pretrain" };
      const { expectedTensors } = await import("../shared/model/checkpoint.ts");
      const missing = [...expectedTensors(model.config, { task: "pretrain" }).keys()]
        .filter((n) => n.startsWith("bert.") && !n.startsWith("bert.pooler") && !model.weights.has(n));
      if (missing.length) {
        throw new InvalidArgument(
          `import: model.safetensors lacks encoder tensors: ${missing.slice(0, 5).join(", ")}${
            missing.length > 5 ? ", ..." : ""
          }`,
        );
      }
      const labels = model.config.id2label && head.task !== "pretrain"
        ? LabelSet.fromId2Label(model.config.id2label).labels.slice()
        : undefined;
      const published = await publishModel(this.store, {
        name,
        version: await freshVersion(this.store, name),
        config: model.config,
        head,
        ...(labels ? { labels } : {}),
        weights: model.weights,
        vocabText: model.vocabText,
        ...(model.tokenizerJson !== undefined ? { tokenizerJson: model.tokenizerJson } : {}),
        extraFiles: {
          "lineage.json": JSON.stringify(
            {
              artifact: { kind: "ARTIFACT_KIND_MODEL", name, prefix: "" },
              inputs: [],
              settings: { source: "imported", files: names.join(",") },
              created_at: new Date().toISOString(),
            },
            null,
            2,
          ) + "\n",
        },
        metadata: { source: "imported" },
      });
      const manifest = published.manifest;
      return modelSummary(
        name,
        published.version,
        await this.store.getJson(`${published.prefix}/config.json`),
        manifest.metadata,
        manifest.parts.reduce((a, p) => a + p.size, 0),
        manifest.createdAt,
      );
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }

  async *exportModel(request: Message, ctx: CallContext): AsyncIterable<Message> {
    const format = request.format === "EXPORT_FORMAT_ONNX" ? "onnx" : "hf";
    const resolved = await resolveModel(this.store, {
      name: request.model?.name ?? "",
      version: request.model?.version || undefined,
    });
    const manifest = await readManifest(this.store, resolved.prefix);
    const config = await this.store.getJson<Record<string, unknown>>(`${resolved.prefix}/config.json`);
    yield {
      model: modelSummary(
        resolved.name,
        resolved.version,
        config,
        manifest.metadata,
        manifest.parts.reduce((a, p) => a + p.size, 0),
        manifest.createdAt,
      ),
    };
    if (format === "hf") {
      if (config.bertforge_layer_norm === "pre") {
        // HF's BertModel is post-LN only: it would load every tensor but the final LayerNorm and compute another
        // function without an error, so this export would be wrong in a way nobody would notice.
        throw new FailedPrecondition(
          `model ${resolved.name}/${resolved.version} is pre-LayerNorm (config bertforge_layer_norm "pre"), which Hugging Face's BertModel cannot run: export it with --format onnx`,
        );
      }
      for (const part of manifest.parts) {
        const stream = await this.store.getStream(`${resolved.prefix}/${part.name}`);
        yield* fileChunks(part.name, stream, part.sha256, ctx.signal);
      }
      return;
    }
    // ONNX: the graph is built from the weights, then sent with the tokenizer files a runtime needs.
    const dir = await Deno.makeTempDir({ prefix: "bertforge-onnx-" });
    try {
      const model = await loadModel(this.store, { name: resolved.name, version: resolved.version });
      const { exportOnnx } = await import("../shared/model/onnx/export.ts");
      const path = join(dir, "model.onnx");
      await exportOnnx(path, {
        config: model.config,
        head: model.head ?? { task: "pretrain" },
        weights: model.weights,
      });
      const { hashFile } = await import("../shared/store/hash.ts");
      const onnx = await Deno.open(path);
      yield* fileChunks("model.onnx", onnx.readable, (await hashFile(path)).sha256, ctx.signal);
      for (const part of manifest.parts) {
        if (!["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"].includes(part.name)) {
          continue;
        }
        yield* fileChunks(
          part.name,
          await this.store.getStream(`${resolved.prefix}/${part.name}`),
          part.sha256,
          ctx.signal,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }

  async evaluate(request: Message): Promise<Message> {
    const ref = { name: request.model?.name ?? "", version: request.model?.version || undefined };
    const resolved = await resolveModel(this.store, ref, "model");
    const config = await this.store.getJson<Record<string, unknown>>(`${resolved.prefix}/config.json`);
    const modelHead = headFromConfig(config as never);
    const asked = TASK_ENUM[request.task ?? ""];
    const task = asked ?? modelHead?.task;
    if (!task || task === "pretrain" || !modelHead || modelHead.task === "pretrain") {
      throw new FailedPrecondition(
        `model ${resolved.name}/${resolved.version} has a ${
          modelHead?.task ?? "bare encoder"
        } head: evaluation needs a fine-tuned classify, multilabel, pair or ner model`,
      );
    }
    if (modelHead.task !== task) {
      throw new FailedPrecondition(
        `model ${resolved.name}/${resolved.version} has a ${modelHead.task} head, not ${task}`,
      );
    }
    // The list travels in one response: long texts times an unbounded count could outgrow the message limit.
    const maxErrors = checkCount("max_errors", num(request.max_errors), COUNT_LIMITS.maxErrors);
    const askedBatch = given(request.batch_size);
    if (askedBatch !== undefined) checkCount("batch_size", askedBatch, COUNT_LIMITS.batchSize);
    const maxLength = checkMaxLength(
      "max_length",
      num(request.max_length) || num(config.bertforge_max_length) || 128,
      num(config.max_position_embeddings),
      `${resolved.name}/${resolved.version}`,
    );
    const data = await readDataset(this.store, request.dataset ?? "", task, "dataset");
    const model = await loadModel(this.store, { name: resolved.name, version: resolved.version }, {
      head: modelHead,
    });
    const labels = LabelSet.fromId2Label(model.config.id2label ?? {});
    const tokenizer = model.tokenizerJson
      ? WordPieceTokenizer.fromTokenizerJson(model.tokenizerJson)
      : WordPieceTokenizer.fromVocabText(model.vocabText);
    const features = task === "ner"
      ? encodeNerExamples(data.examples as NerExample[], tokenizer, labels, { maxLength }).features
      : encodeTextExamples(data.examples as TextExample[], tokenizer, labels, {
        task,
        maxLength,
        windows: model.config.bertforge_long_text === "windows",
      }).features;
    const B = Math.max(1, Math.min(askedBatch ?? 64, features.length));
    checkFitsMemory("evaluate", model.config, {
      batch: B,
      seqLen: maxLength,
      task: "finetune",
      labels: labels.size,
      training: false,
    });
    const engine = await createJobEngine({
      config: model.config,
      head: modelHead,
      mode: "serve",
      seed: 0,
      maxBatch: B,
      maxSeqLen: maxLength,
      ...(this.#options.backend ? { backend: this.#options.backend } : {}),
      ...(this.#options.threads ? { threads: this.#options.threads } : {}),
      log: (message) => this.#options.log?.debug(message),
    });
    try {
      engine.setWeights(model.weights);
      const threshold = opt(request.threshold) as number | undefined ??
        (model.config.bertforge_thresholds as number[] | undefined);
      const outcomes: ExampleOutcome[] = [];
      const result = evaluateFeatures(engine, modelHead, features, labels.labels, {
        B,
        T: maxLength,
        ids: { cls: tokenizer.clsId, sep: tokenizer.sepId, pad: tokenizer.padId },
        ...(threshold !== undefined ? { threshold } : {}),
        onExample: (outcome) => outcomes.push(outcome),
      });
      const mistakes = mistakesOf(task, data.examples, outcomes);
      return {
        model: { name: resolved.name, version: resolved.version },
        task: TASK_NAME[task],
        metrics: result.metrics,
        examples: String(result.examples),
        per_label: result.perLabel,
        labels: result.confusion ? labels.labels : [],
        confusion_matrix: result.confusion ? result.confusion.flat().map(String) : [],
        error_count: String(mistakes.length),
        errors: mistakes.slice(0, maxErrors).map((m) => ({
          line: m.line,
          text: m.text,
          text_b: m.textB,
          gold: m.gold,
          predicted: m.predicted,
          confidence: m.confidence,
        })),
      };
    } finally {
      engine.dispose();
    }
  }

  async close(): Promise<void> {
    await this.manager.close();
  }
}

/** Where an idempotency key's job id is kept (hashed: request ids are free-form client strings). */
function requestKey(requestId: string): string {
  return `trainer/requests/${createHash("sha256").update(requestId).digest("hex")}.json`;
}

function modelSummary(
  name: string,
  version: string,
  config: Record<string, unknown>,
  metadata: Record<string, unknown>,
  sizeBytes: number,
  createdAt: string,
): Message {
  const head = headFromConfig(config as never);
  const id2label = (config.id2label ?? {}) as Record<string, string>;
  return {
    model: { name, version },
    task: TASK_NAME[head?.task ?? "pretrain"] ?? "TASK_TYPE_UNSPECIFIED",
    labels: head && head.task !== "pretrain"
      ? Object.keys(id2label).sort((a, b) => Number(a) - Number(b)).map((k) => id2label[k])
      : [],
    source: (metadata.source as string) ?? "trained",
    created_at: createdAt,
    size_bytes: String(sizeBytes),
    num_layers: config.num_hidden_layers ?? 0,
    hidden_size: config.hidden_size ?? 0,
    num_heads: config.num_attention_heads ?? 0,
    vocab_size: config.vocab_size ?? 0,
    max_position_embeddings: config.max_position_embeddings ?? 0,
    crf: !!config.bertforge_crf,
    pooling: sentencePooling(head),
  };
}

/** A file as ExportModelResponse chunks of 1 MiB, the last one flagged `eof` with the file's sha256. */
async function* fileChunks(
  path: string,
  stream: ReadableStream<Uint8Array>,
  sha256: string,
  signal: AbortSignal,
): AsyncIterable<Message> {
  const CHUNK = 1 << 20;
  let pending = new Uint8Array(0);
  for await (const chunk of stream) {
    if (signal.aborted) {
      await stream.cancel().catch(() => {});
      return;
    }
    const merged = new Uint8Array(pending.length + chunk.length);
    merged.set(pending);
    merged.set(chunk, pending.length);
    pending = merged;
    while (pending.length >= CHUNK) {
      yield { file: { path, data: pending.subarray(0, CHUNK), eof: false, sha256: "" } };
      pending = pending.slice(CHUNK);
    }
  }
  yield { file: { path, data: pending, eof: true, sha256 } };
}

/**
 * The model registry: which models are resident, on which backend, and which instance answers a request.
 *
 * - A model is loaded by name from the store (the latest version, or a pinned one) into a serving backend
 *   (backends.ts), with its own tokenizer and the head its config.json describes.
 * - Several models stay resident within a memory budget; loading one that does not fit unloads the least
 *   recently used others first (default models are kept), or fails RESOURCE_EXHAUSTED.
 * - Hot reload: a poller watches the store; when a newer version of a model served as "latest" is published,
 *   the new version is loaded beside the old one, then swapped in. Requests already holding the old instance
 *   finish on it; it is disposed once the last of them returns (the same for Unload and eviction).
 * - A request for a model in the store that is not resident loads it first (unless auto-load is off).
 *
 * A slot is one servable model: `name` (tracking the latest version) or `name@version` (pinned). It holds at
 * most one instance at a time; retired instances live on only until their in-flight count reaches zero.
 */
import {
  Cancelled,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  ResourceExhausted,
} from "../shared/errors.ts";
import type { HeadSpec } from "../shared/engine/engine.ts";
import { adaptWeights } from "../shared/model/checkpoint.ts";
import { type CrfParams, crfParamsOf } from "../shared/model/crf.ts";
import type { BertConfig } from "../shared/model/config.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import { checkBackendName, createServingBackend, type ServingBackend } from "./backends.ts";
import type { BatchTarget } from "./batcher.ts";
import type { InferenceMetrics } from "./metrics.ts";
import { flattenMetrics, readModelConfig, readStoredModel, type StoredModel } from "./models.ts";
import {
  listModelVersions,
  resolveVersion,
  validateName,
  validateVersion,
} from "../shared/model/registry.ts";

export type ModelStateName =
  | "MODEL_STATE_AVAILABLE"
  | "MODEL_STATE_LOADING"
  | "MODEL_STATE_READY"
  | "MODEL_STATE_UNLOADING"
  | "MODEL_STATE_FAILED";

/** A resident model version, ready to serve. */
export interface ModelInstance extends BatchTarget {
  readonly name: string;
  readonly version: string;
  readonly config: BertConfig;
  readonly configJson: string;
  readonly head: HeadSpec;
  /** Label names in id order (empty for pretrained models). */
  readonly labels: string[];
  readonly tokenizer: WordPieceTokenizer;
  /** Longest input in tokens, special tokens included. */
  readonly maxLength: number;
  /** `mlm`, `nsp`, `classifier`, `token_classifier`, `crf`: the heads with trained weights. */
  readonly heads: string[];
  readonly lineage: Record<string, unknown> | undefined;
  readonly metrics: Record<string, number>;
  readonly sizeBytes: number;
  readonly createdAt: string;
  readonly source: string;
  /**
   * Multi-label decision thresholds from training, one per label (`bertforge_thresholds`, as fine-tuning writes
   * them; a single `bertforge_threshold` for all labels is read too), default 0.5.
   */
  readonly thresholds: number[];
  /** Classify/multilabel trained on long texts as windows (`bertforge_long_text: "windows"`): served the same way. */
  readonly windows: boolean;
  /** A CRF head's tensors, for decoding a sentence that ran as windows as one chain (stitchTagOutputs). */
  readonly crf?: CrfParams;
  readonly loadSeconds: number;
  lastUsed: number;
  inFlight: number;
  retired: boolean;
}

interface Slot {
  key: string;
  name: string;
  /** Set for a slot pinned to one version; unset for one tracking the latest. */
  pinned?: string;
  backend: string;
  state: ModelStateName;
  instance?: ModelInstance;
  loading?: Promise<ModelInstance>;
  error?: string;
  /** A newer version whose hot reload failed: not retried on every poll (a new publish is). */
  failedVersion?: string;
}

export interface RegistryOptions {
  store: ObjectStore;
  /** Default backend for loads that name none. @default "auto" */
  backend?: string;
  threads?: number;
  /** Bytes all resident models may use together. @default 4 GiB */
  memoryBudgetBytes?: number;
  /** Cap on any model's input length in tokens. @default 512 */
  maxInputLength?: number;
  /** The batcher's token budget: backends size their buffers for it. */
  maxBatchTokens: number;
  /**
   * Run the native engine on the event loop instead of a worker thread per model (tests; one thread less).
   * @default false
   */
  engineInProcess?: boolean;
  /** Load a model on its first request. @default true */
  autoLoad?: boolean;
  /** How often the store is polled for new versions; 0 turns hot reload off. @default 10000 */
  reloadIntervalMs?: number;
  metrics?: InferenceMetrics;
  log?: (level: "info" | "warn" | "error", message: string, fields?: Record<string, unknown>) => void;
}

/** Where a request points: a model name (empty: the default) and a version (empty: the latest resident). */
export interface ModelRefInput {
  name?: string;
  version?: string;
}

let nextInstanceId = 1;

/** The heads a model carries with trained weights, as ModelInfo lists them. */
function headsOf(head: HeadSpec, initialized: string[]): string[] {
  const fresh = (prefix: string) => initialized.some((n) => n.startsWith(prefix));
  if (head.task === "pretrain") {
    const heads: string[] = [];
    if (!fresh("cls.predictions.")) heads.push("mlm");
    if (!fresh("cls.seq_relationship.")) heads.push("nsp");
    return heads;
  }
  if (head.task === "ner") return head.crf ? ["token_classifier", "crf"] : ["token_classifier"];
  return ["classifier"];
}

function labelsOf(config: BertConfig): string[] {
  if (!config.id2label) return [];
  return Object.entries(config.id2label).sort(([a], [b]) => Number(a) - Number(b)).map(([, label]) => label);
}

function tokenizerOf(stored: StoredModel): WordPieceTokenizer {
  if (stored.tokenizerJson !== undefined) {
    try {
      return WordPieceTokenizer.fromTokenizerJson(stored.tokenizerJson);
    } catch {
      // A tokenizer.json we cannot read (another model family's) falls back to vocab.txt below.
    }
  }
  const lowercase = stored.tokenizerConfig?.do_lower_case;
  return WordPieceTokenizer.fromVocabText(stored.vocabText, {
    lowercase: typeof lowercase === "boolean" ? lowercase : true,
  });
}

export class Registry {
  readonly store: ObjectStore;
  readonly options: RegistryOptions;
  readonly #slots = new Map<string, Slot>();
  readonly #retired = new Set<ModelInstance>();
  #defaultName: string | undefined;
  #poller: ReturnType<typeof setInterval> | undefined;
  #polling = false;
  #closed = false;

  constructor(options: RegistryOptions) {
    this.store = options.store;
    this.options = options;
    checkBackendName(options.backend ?? "auto", "--backend");
    const reload = options.reloadIntervalMs ?? 10_000;
    if (reload > 0) {
      const poller = setInterval(() => void this.checkForUpdates(), reload);
      Deno.unrefTimer(poller as unknown as number);
      this.#poller = poller;
    }
  }

  get defaultName(): string | undefined {
    return this.#defaultName;
  }

  set defaultName(name: string | undefined) {
    this.#defaultName = name;
  }

  #log(level: "info" | "warn" | "error", message: string, fields?: Record<string, unknown>): void {
    this.options.log?.(level, message, fields);
  }

  /** Resident instances, retired ones included (they still hold memory). */
  instances(): ModelInstance[] {
    const live = [...this.#slots.values()].map((s) => s.instance).filter((i): i is ModelInstance => !!i);
    return [...live, ...this.#retired];
  }

  #memoryInUse(): number {
    return this.instances().reduce((sum, i) => sum + i.backend.memoryBytes(), 0);
  }

  #updateGauges(): void {
    const metrics = this.options.metrics;
    if (!metrics) return;
    metrics.modelsLoaded.set([...this.#slots.values()].filter((s) => s.instance).length);
    metrics.modelMemory.set(this.#memoryInUse());
  }

  /** Reads a version from the store and builds a ready instance (not yet registered). */
  async #build(name: string, version: string, backendName: string): Promise<ModelInstance> {
    const started = performance.now();
    const stored = await readStoredModel(this.store, name, version);
    const config = stored.config;
    // A bare encoder (BertModel / BertForMaskedLM import) is served with the pretraining heads; those
    // missing from the checkpoint are initialised and left out of `heads`, so FillMask refuses honestly.
    const head: HeadSpec = stored.head ?? { task: "pretrain" };
    const adapted = adaptWeights(stored.weights, config, head, 0);
    const heads = headsOf(head, adapted.initialized);
    const tokenizer = tokenizerOf(stored);
    if (tokenizer.idToToken.length > config.vocab_size) {
      throw new FailedPrecondition(
        `model ${name}/${version}: vocab.txt has ${tokenizer.idToToken.length} tokens but config vocab_size is ${config.vocab_size}`,
      );
    }
    const trainedLength = typeof config.bertforge_max_length === "number"
      ? config.bertforge_max_length
      : Infinity;
    const tokenizerLength = typeof stored.tokenizerConfig?.model_max_length === "number"
      ? stored.tokenizerConfig.model_max_length as number
      : Infinity;
    const maxLength = Math.min(
      config.max_position_embeddings,
      trainedLength,
      tokenizerLength,
      this.options.maxInputLength ?? 512,
      this.options.maxBatchTokens,
    );
    // Set once built: a worker that dies later is replaced at once (#healFailed), not on the next request.
    const built: { instance?: ModelInstance } = {};
    const backend: ServingBackend = await createServingBackend({
      config,
      head,
      weights: adapted.weights,
      backend: backendName,
      maxSeqLen: maxLength,
      maxBatchTokens: this.options.maxBatchTokens,
      ...(this.options.threads ? { threads: this.options.threads } : {}),
      ...(stored.onnx ? { onnx: stored.onnx } : {}),
      ...(this.options.engineInProcess ? { inProcess: true } : {}),
      label: `${name}/${version}`,
      log: (message) => this.#log("info", message, { model: `${name}/${version}` }),
      onFailure: () => built.instance && this.#healFailed(built.instance),
    });
    const lineage = stored.lineage;
    const labels = labelsOf(config);
    const single = typeof config.bertforge_threshold === "number" ? config.bertforge_threshold : 0.5;
    const perLabel = Array.isArray(config.bertforge_thresholds) ? config.bertforge_thresholds : [];
    const thresholds = labels.map((_, k) => typeof perLabel[k] === "number" ? perLabel[k] as number : single);
    const createdAt = typeof lineage?.created_at === "string"
      ? lineage.created_at
      : stored.manifest.createdAt ?? "";
    const source = typeof stored.manifest.metadata?.source === "string"
      ? stored.manifest.metadata.source as string
      : lineage?.job_id
      ? "trained"
      : "imported";
    const instance: ModelInstance = {
      id: nextInstanceId++,
      label: name,
      backend,
      padId: tokenizer.padId,
      vocabSize: config.vocab_size,
      tokenLevel: head.task === "ner",
      name,
      version,
      config,
      configJson: stored.configJson,
      head,
      labels,
      tokenizer,
      maxLength,
      heads,
      lineage,
      metrics: flattenMetrics(stored.metrics),
      sizeBytes: stored.sizeBytes,
      createdAt,
      source,
      thresholds,
      windows: config.bertforge_long_text === "windows",
      ...(head.crf ? { crf: crfParamsOf(adapted.weights) } : {}),
      loadSeconds: (performance.now() - started) / 1000,
      lastUsed: performance.now(),
      inFlight: 0,
      retired: false,
    };
    built.instance = instance;
    return instance;
  }

  /** Disposes an instance now if idle, else when its last request returns. */
  #retire(instance: ModelInstance): void {
    instance.retired = true;
    if (instance.inFlight === 0) {
      this.#retired.delete(instance);
      instance.backend.dispose();
    } else {
      this.#retired.add(instance);
    }
    this.#updateGauges();
  }

  /** Makes room for `incoming` bytes by retiring least recently used slots (defaults kept). */
  #evictFor(incoming: number, keep: Slot): void {
    const budget = this.options.memoryBudgetBytes ?? 4 * 1024 ** 3;
    let inUse = this.#memoryInUse();
    if (inUse + incoming <= budget) return;
    const candidates = [...this.#slots.values()]
      .filter((s) => s !== keep && s.instance && s.name !== this.#defaultName)
      .sort((a, b) => a.instance!.lastUsed - b.instance!.lastUsed);
    for (const slot of candidates) {
      if (inUse + incoming <= budget) break;
      const instance = slot.instance!;
      inUse -= instance.backend.memoryBytes();
      this.#log("info", "unloading the least recently used model to fit the memory budget", {
        model: `${instance.name}/${instance.version}`,
      });
      this.#slots.delete(slot.key);
      this.#retire(instance);
    }
    if (inUse + incoming > budget) {
      const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;
      throw new ResourceExhausted(
        `model ${keep.key} needs ${mib(incoming)} but the memory budget is ${mib(budget)} with ${
          mib(inUse)
        } held by models that cannot be unloaded (defaults or in use): raise --memory-budget-mb or unload one`,
      );
    }
  }

  /** Loads (or returns the resident) model; `seconds` is 0 when it was already resident. */
  async load(
    ref: ModelRefInput,
    options: {
      backend?: string;
      setDefault?: boolean; /** Reload even when resident (hot reload). */
      force?: boolean;
    } = {},
  ): Promise<{ instance: ModelInstance; seconds: number }> {
    if (this.#closed) throw new Cancelled("the registry is closed: the service is stopping");
    const name = validateName(ref.name ?? "", "model.name");
    const pinned = ref.version ? validateVersion(ref.version, "model.version") : undefined;
    const backend = checkBackendName(options.backend || this.options.backend || "auto", "backend");
    const key = pinned ? `${name}@${pinned}` : name;
    let slot = this.#slots.get(key);
    if (
      slot?.instance && !options.force && !slot.instance.backend.failure?.() &&
      (!options.backend || slot.instance.backend.name === backend || backend === "auto")
    ) {
      if (options.setDefault) this.#defaultName = name;
      return { instance: slot.instance, seconds: 0 };
    }
    if (slot?.loading) {
      const instance = await slot.loading;
      if (options.setDefault) this.#defaultName = name;
      return { instance, seconds: instance.loadSeconds };
    }
    if (!slot) {
      slot = { key, name, ...(pinned ? { pinned } : {}), backend, state: "MODEL_STATE_LOADING" };
      this.#slots.set(key, slot);
    }
    const current = slot;
    current.state = "MODEL_STATE_LOADING";
    current.backend = backend;
    delete current.error;
    current.loading = (async () => {
      const version = await resolveVersion(this.store, name, pinned);
      const instance = await this.#build(name, version, backend);
      try {
        this.#evictFor(instance.backend.memoryBytes(), current);
      } catch (error) {
        instance.backend.dispose();
        throw error;
      }
      const previous = current.instance;
      current.instance = instance;
      current.state = "MODEL_STATE_READY";
      if (previous) this.#retire(previous);
      this.options.metrics?.modelLoads.inc({ outcome: "ok" });
      this.#log("info", "model loaded", {
        model: `${name}/${version}`,
        backend: instance.backend.name,
        seconds: Number(instance.loadSeconds.toFixed(3)),
        max_length: instance.maxLength,
      });
      this.#updateGauges();
      return instance;
    })();
    try {
      const instance = await current.loading;
      if (options.setDefault || this.#defaultName === undefined) this.#defaultName = name;
      return { instance, seconds: instance.loadSeconds };
    } catch (error) {
      this.options.metrics?.modelLoads.inc({ outcome: "failed" });
      if (current.instance) {
        current.state = "MODEL_STATE_READY";
      } else if (error instanceof NotFound) {
        // Nothing to remember about a model that does not exist.
        if (this.#slots.get(key) === current) this.#slots.delete(key);
      } else {
        current.state = "MODEL_STATE_FAILED";
        current.error = (error as Error)?.message ?? String(error);
        this.#log("error", "model load failed", { model: key, error: current.error });
      }
      throw error;
    } finally {
      delete current.loading;
    }
  }

  /** Unloads a resident model; requests in flight finish first. NotFound when it is not resident. */
  unload(ref: ModelRefInput): ModelInstance {
    const name = validateName(ref.name ?? "", "model.name");
    const slots = [...this.#slots.values()].filter((s) =>
      s.name === name && s.instance && (!ref.version || s.instance.version === ref.version)
    );
    if (slots.length === 0) {
      throw new NotFound(`model ${name}${ref.version ? `/${ref.version}` : ""} is not loaded`);
    }
    let last: ModelInstance | undefined;
    for (const slot of slots) {
      slot.state = "MODEL_STATE_UNLOADING";
      this.#slots.delete(slot.key);
      last = slot.instance!;
      this.#retire(slot.instance!);
    }
    if (this.#defaultName === name && ![...this.#slots.values()].some((s) => s.name === name)) {
      this.#defaultName = undefined;
    }
    this.#log("info", "model unloaded", { model: name, version: last!.version });
    return last!;
  }

  /** The resident instance a reference names, without loading; undefined when none. */
  resident(ref: ModelRefInput): ModelInstance | undefined {
    const name = ref.name || this.#defaultName;
    if (!name) return undefined;
    const slots = [...this.#slots.values()].filter((s) => s.name === name && s.instance);
    if (ref.version) return slots.find((s) => s.instance!.version === ref.version)?.instance;
    const tracking = slots.find((s) => !s.pinned);
    if (tracking) return tracking.instance;
    return slots.map((s) => s.instance!).sort((a, b) => (a.version < b.version ? 1 : -1))[0];
  }

  /**
   * Runs `fn` with the instance a request names (loading it first when allowed), counting it in flight so a
   * reload or unload waits for it.
   */
  async use<T>(ref: ModelRefInput, fn: (instance: ModelInstance) => Promise<T>): Promise<T> {
    const instance = await this.acquire(ref);
    try {
      return await fn(instance);
    } finally {
      this.release(instance);
    }
  }

  /** The instance for a request, counted in flight; pair with release(). */
  async acquire(ref: ModelRefInput): Promise<ModelInstance> {
    if (!ref.name && !this.#defaultName) {
      throw new InvalidArgument("model is empty and the service has no default model: name a model");
    }
    const name = validateName(ref.name || this.#defaultName!, "model");
    if (ref.version) validateVersion(ref.version, "version");
    let instance = this.resident({ name, ...(ref.version ? { version: ref.version } : {}) });
    if (instance?.backend.failure?.()) instance = await this.#reloadFailed(instance);
    if (!instance) {
      const loading = [...this.#slots.values()].find((s) =>
        s.name === name && s.loading && (!ref.version || s.pinned === ref.version)
      );
      if (loading?.loading) {
        instance = await loading.loading;
      } else if (this.options.autoLoad ?? true) {
        instance = (await this.load({ name, ...(ref.version ? { version: ref.version } : {}) })).instance;
      } else {
        await resolveVersion(this.store, name, ref.version); // NotFound when it does not exist at all
        throw new FailedPrecondition(`model ${name} is not loaded: call Load first (auto-load is off)`);
      }
    }
    instance.inFlight++;
    instance.lastUsed = performance.now();
    return instance;
  }

  /** Reloads a failed resident model in the background; a failed reload is retried by the next request. */
  #healFailed(instance: ModelInstance): void {
    if (this.#closed || instance.retired) return;
    this.#reloadFailed(instance).catch((error) =>
      this.#log(
        "error",
        "reloading a model whose backend failed did not work; the next request tries again",
        {
          model: `${instance.name}/${instance.version}`,
          error: (error as Error).message,
        },
      )
    );
  }

  /**
   * Loads again a resident model whose backend can no longer serve (its engine worker died), whatever
   * auto-load says: it was loaded once, so this restores it. Concurrent callers share the one load.
   */
  async #reloadFailed(instance: ModelInstance): Promise<ModelInstance> {
    const slot = [...this.#slots.values()].find((s) => s.instance === instance);
    if (!slot) return instance;
    this.#log("warn", "the model's backend failed: reloading it", {
      model: `${instance.name}/${instance.version}`,
      error: instance.backend.failure?.()?.message ?? "",
    });
    if (slot.loading) return await slot.loading;
    const ref = { name: slot.name, ...(slot.pinned ? { version: slot.pinned } : {}) };
    return (await this.load(ref, { backend: slot.backend })).instance;
  }

  release(instance: ModelInstance): void {
    instance.inFlight--;
    if (instance.retired && instance.inFlight === 0 && this.#retired.has(instance)) {
      this.#retired.delete(instance);
      instance.backend.dispose();
      this.#updateGauges();
    }
  }

  /**
   * Hot reload: loads every newer published version of the models served as "latest" and swaps it in. Also
   * retries default models whose load failed. Returns the models that changed.
   */
  async checkForUpdates(): Promise<string[]> {
    if (this.#polling || this.#closed) return [];
    this.#polling = true;
    const changed: string[] = [];
    try {
      for (const slot of [...this.#slots.values()]) {
        if (slot.pinned || slot.loading) continue;
        if (slot.state === "MODEL_STATE_FAILED" && slot.name !== this.#defaultName) continue;
        try {
          const latest = await resolveVersion(this.store, slot.name);
          if (slot.instance && latest <= slot.instance.version) continue;
          if (slot.instance && latest === slot.failedVersion) continue;
          this.#log("info", "a new version was published: reloading", {
            model: slot.name,
            from: slot.instance?.version ?? "",
            to: latest,
          });
          try {
            await this.load({ name: slot.name }, { backend: slot.backend, force: true });
          } catch (error) {
            slot.failedVersion = latest;
            throw error;
          }
          changed.push(`${slot.name}/${latest}`);
        } catch (error) {
          this.#log("warn", "hot reload check failed", { model: slot.name, error: (error as Error).message });
        }
      }
    } finally {
      this.#polling = false;
    }
    return changed;
  }

  /** State of a model for listings: resident slots first, else what the store says. */
  state(name: string, version?: string): { state: ModelStateName; instance?: ModelInstance; error?: string } {
    const slots = [...this.#slots.values()].filter((s) => s.name === name);
    const match = version
      ? slots.find((s) => s.instance?.version === version || s.pinned === version)
      : slots.find((s) => !s.pinned) ?? slots[0];
    if (!match) return { state: "MODEL_STATE_AVAILABLE" };
    const failure = match.instance?.backend.failure?.();
    if (failure) return { state: "MODEL_STATE_FAILED", instance: match.instance!, error: failure.message };
    return {
      state: match.state,
      ...(match.instance ? { instance: match.instance } : {}),
      ...(match.error ? { error: match.error } : {}),
    };
  }

  /** Every model in the store (latest version) plus resident pinned versions, with their states. */
  async listAll(): Promise<Array<{ name: string; version: string; versions: string[] }>> {
    const out: Array<{ name: string; version: string; versions: string[] }> = [];
    const seen = new Set<string>();
    for (const [name, versions] of await listModelVersions(this.store)) {
      const latest = versions.at(-1)!;
      out.push({ name, version: latest, versions });
      seen.add(`${name}/${latest}`);
    }
    for (const instance of this.instances()) {
      if (instance.retired || seen.has(`${instance.name}/${instance.version}`)) continue;
      seen.add(`${instance.name}/${instance.version}`);
      out.push({ name: instance.name, version: instance.version, versions: [instance.version] });
    }
    return out;
  }

  /** config.json of a version that may not be resident (ModelInfo, ListModels). */
  async storedConfig(name: string, version?: string) {
    const resolved = await resolveVersion(this.store, name, version);
    return { version: resolved, ...(await readModelConfig(this.store, name, resolved)) };
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#poller !== undefined) clearInterval(this.#poller);
    for (const slot of this.#slots.values()) {
      if (slot.loading) await slot.loading.catch(() => {});
    }
    for (const slot of [...this.#slots.values()]) {
      if (slot.instance) this.#retire(slot.instance);
    }
    this.#slots.clear();
  }
}

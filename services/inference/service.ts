/**
 * InferenceService over gRPC: thin handlers over infer.ts (operations) and registry.ts (models). The shared
 * rpc layer maps thrown errors to statuses once, passes the caller's deadline and cancellation on as
 * `ctx.signal`/`ctx.deadline`, and the batcher drops a cancelled request's queued inputs.
 *
 * Streams (`…Stream`) answer one message per request message, in order, each echoing its `id`; a bad item
 * answers with `error` and the stream goes on. Items are processed concurrently (a window of STREAM_WINDOW),
 * so a stream fills batches like parallel unary calls do.
 */
import { InvalidArgument, NotFound } from "../shared/errors.ts";
import { type CallContext, type Handlers, type Message, pageOf } from "../shared/rpc/mod.ts";
import { grpcCodeName, toStatus } from "../shared/rpc/status.ts";
import { headFromConfig } from "../shared/model/checkpoint.ts";
import { sentencePooling } from "../shared/engine/engine.ts";
import type { BertConfig } from "../shared/model/config.ts";
import type { Answer, CallOptions, Inference } from "./infer.ts";
import { messageField, stringField } from "./infer.ts";
import type { InferenceMetrics } from "./metrics.ts";
import { flattenMetrics, readStoredModelExtras } from "./models.ts";
import type { ModelInstance, ModelStateName, Registry } from "./registry.ts";

/** Stream items processed at once per stream. */
const STREAM_WINDOW = 32;

const TASK_TYPES: Record<string, string> = {
  pretrain: "TASK_TYPE_PRETRAIN",
  classify: "TASK_TYPE_CLASSIFY",
  multilabel: "TASK_TYPE_MULTILABEL",
  pair: "TASK_TYPE_PAIR",
  ner: "TASK_TYPE_NER",
};

export function callOptions(ctx: Pick<CallContext, "signal" | "deadline">): CallOptions {
  return { signal: ctx.signal, ...(ctx.deadline ? { deadline: ctx.deadline.getTime() } : {}) };
}

/** `{code, message}` of an error, as ItemError and HTTP error bodies carry it. */
export function itemError(error: unknown): { code: string; message: string } {
  const status = toStatus(error);
  return { code: grpcCodeName(status.code), message: status.details };
}

/**
 * Runs `handle` on every message of `requests` with at most `window` in flight and yields the answers in
 * request order. `handle` must not throw (it answers errors as messages).
 */
export function orderedStream(
  requests: AsyncIterable<Message>,
  handle: (message: Message) => Promise<Message>,
  window = STREAM_WINDOW,
): AsyncIterable<Message> {
  const results: Promise<Message>[] = [];
  let readerDone = false;
  let readerError: unknown;
  let wakeWriter: (() => void) | undefined;
  let wakeReader: (() => void) | undefined;
  (async () => {
    try {
      for await (const message of requests) {
        while (results.length >= window) await new Promise<void>((resolve) => (wakeReader = resolve));
        results.push(handle(message));
        wakeWriter?.();
      }
    } catch (error) {
      readerError = error;
    } finally {
      readerDone = true;
      wakeWriter?.();
    }
  })();
  return (async function* () {
    while (true) {
      if (results.length === 0) {
        if (readerDone) {
          if (readerError) throw readerError;
          return;
        }
        await new Promise<void>((resolve) => (wakeWriter = resolve));
        wakeWriter = undefined;
        continue;
      }
      const value = await results[0]!;
      results.shift();
      wakeReader?.();
      wakeReader = undefined;
      yield value;
    }
  })();
}

function configSummary(name: string, version: string, config: BertConfig, extra: Message = {}): Message {
  const head = headFromConfig(config);
  const labels = config.id2label
    ? Object.entries(config.id2label).sort(([a], [b]) => Number(a) - Number(b)).map(([, l]) => l)
    : [];
  return {
    model: { name, version },
    task: TASK_TYPES[head?.task ?? "pretrain"] ?? "TASK_TYPE_UNSPECIFIED",
    labels,
    num_layers: config.num_hidden_layers,
    hidden_size: config.hidden_size,
    num_heads: config.num_attention_heads,
    vocab_size: config.vocab_size,
    max_position_embeddings: config.max_position_embeddings,
    crf: Boolean(config.bertforge_crf),
    pooling: sentencePooling(head),
    ...extra,
  };
}

export function servedModel(registry: Registry, instance: ModelInstance, state: ModelStateName): Message {
  return {
    summary: configSummary(instance.name, instance.version, instance.config, {
      task: TASK_TYPES[instance.head.task],
      source: instance.source,
      created_at: instance.createdAt,
      size_bytes: String(instance.sizeBytes),
    }),
    state,
    backend: instance.backend.name,
    memory_bytes: String(instance.backend.memoryBytes()),
    is_default: registry.defaultName === instance.name,
  };
}

function lineageMessage(lineage: Record<string, unknown> | undefined): Message | undefined {
  if (!lineage) return undefined;
  const settings: Record<string, string> = {};
  for (const [k, v] of Object.entries(messageField(lineage.settings, "lineage.settings"))) {
    settings[k] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return {
    artifact: lineage.artifact ?? {},
    inputs: Array.isArray(lineage.inputs) ? lineage.inputs : [],
    settings,
    code_version: String(lineage.code_version ?? ""),
    job_id: String(lineage.job_id ?? ""),
    created_at: String(lineage.created_at ?? ""),
  };
}

function modelRefOf(value: unknown, field = "model"): { name: string; version: string } {
  const ref = messageField(value, field);
  return {
    name: stringField(ref.name, `${field}.name`),
    version: stringField(ref.version, `${field}.version`),
  };
}

export interface ServiceDeps {
  inference: Inference;
  registry: Registry;
  metrics: InferenceMetrics;
}

/** The InferenceService handlers by method name. */
export function inferenceHandlers({ inference, registry, metrics }: ServiceDeps): Handlers {
  const unary =
    (method: string, op: (request: Message, call: CallOptions) => Promise<Answer>) =>
    async (request: Message, ctx: CallContext) => {
      const started = performance.now();
      let code = "OK";
      try {
        return (await op(request, callOptions(ctx))).response;
      } catch (error) {
        code = itemError(error).code;
        throw error;
      } finally {
        metrics.requests.inc({ method, protocol: "grpc", code });
        metrics.requestTime.observe(performance.now() - started, { method, protocol: "grpc" });
      }
    };

  /** `{id, request}` → `{id, response}` or `{id, error}`. */
  const stream =
    (method: string, op: (request: Message, call: CallOptions) => Promise<Answer>) =>
    (requests: AsyncIterable<Message>, ctx: CallContext) =>
      orderedStream(requests, async (message) => {
        const id = typeof message?.id === "string" ? message.id : "";
        const started = performance.now();
        try {
          const answer = await op(messageField(message?.request, "request"), callOptions(ctx));
          metrics.requests.inc({ method, protocol: "grpc", code: "OK" });
          return { id, response: answer.response };
        } catch (error) {
          const failure = itemError(error);
          metrics.requests.inc({ method, protocol: "grpc", code: failure.code });
          return { id, error: failure };
        } finally {
          metrics.requestTime.observe(performance.now() - started, { method, protocol: "grpc" });
        }
      });

  return {
    Classify: unary("Classify", (r, c) => inference.classify(r, c)),
    ClassifyBatch: unary("ClassifyBatch", (r, c) => inference.classifyBatch(r, c)),
    ClassifyStream: stream("ClassifyStream", (r, c) => inference.classify(r, c)),
    ClassifyPair: unary("ClassifyPair", (r, c) => inference.classifyPair(r, c)),
    ClassifyPairBatch: unary("ClassifyPairBatch", (r, c) => inference.classifyPairBatch(r, c)),
    ClassifyPairStream: stream("ClassifyPairStream", (r, c) => inference.classifyPair(r, c)),
    Tag: unary("Tag", (r, c) => inference.tag(r, c)),
    TagBatch: unary("TagBatch", (r, c) => inference.tagBatch(r, c)),
    TagStream: stream("TagStream", (r, c) => inference.tag(r, c)),
    FillMask: unary("FillMask", (r, c) => inference.fillMask(r, c)),
    FillMaskBatch: unary("FillMaskBatch", (r, c) => inference.fillMaskBatch(r, c)),
    FillMaskStream: stream("FillMaskStream", (r, c) => inference.fillMask(r, c)),
    Embed: unary("Embed", (r, c) => inference.embed(r, c)),
    EmbedBatch: unary("EmbedBatch", (r, c) => inference.embedBatch(r, c)),
    EmbedStream: stream("EmbedStream", (r, c) => inference.embed(r, c)),
    Tokenize: unary("Tokenize", (r, c) => inference.tokenize(r, c)),
    TokenizeStream: (requests: AsyncIterable<Message>, ctx: CallContext) =>
      orderedStream(requests, async (message) => {
        const id = typeof message?.id === "string" ? message.id : "";
        try {
          const answer = await inference.tokenize({
            model: message.model,
            version: message.version,
            inputs: [messageField(message.input, "input")],
            options: message.options,
          }, callOptions(ctx));
          return { id, model: answer.response.model, encoding: answer.response.encodings[0] };
        } catch (error) {
          return { id, model: { name: String(message?.model ?? ""), version: "" }, error: itemError(error) };
        }
      }),
    ZeroShot: unary("ZeroShot", (r, c) => inference.zeroShot(r, c)),
    ZeroShotBatch: unary("ZeroShotBatch", (r, c) => inference.zeroShotBatch(r, c)),
    ListModels: (request: Message) => listModels(registry, request),
    Load: async (request: Message) => {
      const ref = modelRefOf(request.model);
      if (!ref.name) throw new InvalidArgument("model.name is empty: name the model to load");
      const { instance, seconds } = await registry.load(ref, {
        backend: stringField(request.backend, "backend"),
        setDefault: request.set_default === true,
      });
      return { model: servedModel(registry, instance, "MODEL_STATE_READY"), load_seconds: seconds };
    },
    Unload: (request: Message) => {
      const ref = modelRefOf(request.model);
      if (!ref.name) throw new InvalidArgument("model.name is empty: name the model to unload");
      const instance = registry.unload(ref);
      return { model: { name: instance.name, version: instance.version } };
    },
    ModelInfo: (request: Message) => modelInfo(registry, request),
  };
}

export async function listModels(registry: Registry, request: Message): Promise<Message> {
  const models: Message[] = [];
  for (const { name, version } of await registry.listAll()) {
    const { state, instance } = registry.state(name, version);
    if (request.loaded_only === true && !instance) continue;
    if (instance) {
      models.push(servedModel(registry, instance, state));
      continue;
    }
    try {
      const { config, manifest } = await registry.storedConfig(name, version);
      models.push({
        summary: configSummary(name, version, config, {
          source: String(manifest.metadata?.source ?? "imported"),
          created_at: manifest.createdAt ?? "",
          size_bytes: String(manifest.parts.reduce((sum, p) => sum + p.size, 0)),
        }),
        state,
        backend: "",
        memory_bytes: "0",
        is_default: false,
      });
    } catch {
      // A stray artifact under models/ without a readable config.json is not a model.
    }
  }
  const { items, page } = pageOf(models, request.page);
  return { models: items, page };
}

export async function modelInfo(registry: Registry, request: Message): Promise<Message> {
  const ref = modelRefOf(request.model);
  const name = ref.name || registry.defaultName;
  if (!name) throw new InvalidArgument("model.name is empty and the service has no default model");
  const resident = registry.resident({ name, ...(ref.version ? { version: ref.version } : {}) });
  if (resident) {
    return {
      model: servedModel(registry, resident, "MODEL_STATE_READY"),
      config_json: resident.configJson,
      ...(resident.lineage ? { lineage: lineageMessage(resident.lineage) } : {}),
      max_length: resident.maxLength,
      heads: resident.heads,
      metrics: resident.metrics,
      error: "",
    };
  }
  let stored;
  try {
    stored = await registry.storedConfig(name, ref.version || undefined);
  } catch (error) {
    if (error instanceof NotFound) {
      throw new NotFound(`model ${name}${ref.version ? `/${ref.version}` : ""} is not in the store`);
    }
    throw error;
  }
  const { state, error } = registry.state(name, stored.version);
  const extras = await readStoredModelExtras(registry.store, stored.manifest);
  const head = headFromConfig(stored.config);
  const heads = head?.task === "pretrain" || !head
    ? ["mlm", "nsp"]
    : head.task === "ner"
    ? head.crf ? ["token_classifier", "crf"] : ["token_classifier"]
    : ["classifier"];
  const trained = typeof stored.config.bertforge_max_length === "number"
    ? stored.config.bertforge_max_length
    : Infinity;
  return {
    model: {
      summary: configSummary(name, stored.version, stored.config, {
        source: String(stored.manifest.metadata?.source ?? "imported"),
        created_at: stored.manifest.createdAt ?? "",
        size_bytes: String(stored.manifest.parts.reduce((sum, p) => sum + p.size, 0)),
      }),
      state,
      backend: "",
      memory_bytes: "0",
      is_default: false,
    },
    config_json: stored.configJson,
    ...(extras.lineage ? { lineage: lineageMessage(extras.lineage) } : {}),
    max_length: Math.min(stored.config.max_position_embeddings, trained),
    heads,
    metrics: flattenMetrics(extras.metrics),
    error: error ?? "",
  };
}

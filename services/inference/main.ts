/**
 * The inference service process: `deno run -A services/inference/main.ts [flags]`. gRPC on `--port` (port base
 * + 4), HTTP/JSON on `--http-port` (port base + 5). Common flags: services/shared/config/settings.ts. Its own
 * knobs, each a flag or an environment variable (the flag wins), with the trade-off each makes:
 *
 * | flag                        | environment                          | default | trade-off |
 * |-----------------------------|--------------------------------------|---------|-----------|
 * | `--models a,b@VERSION`      | `BERTFORGE_MODELS`                   | none    | loaded at start; health is NOT_SERVING until they are; the first is the default model |
 * | `--max-batch-tokens`        | `BERTFORGE_MAX_BATCH_TOKENS`         | 4096    | padded B*T per forward pass: larger batches more throughput, more memory and latency |
 * | `--max-batch-requests`      | `BERTFORGE_MAX_BATCH_REQUESTS`       | 64      | inputs per forward pass |
 * | `--max-concurrent-requests` | `BERTFORGE_MAX_CONCURRENT_REQUESTS`  | 512     | inputs queued or running; beyond it 429 / RESOURCE_EXHAUSTED instead of growing memory |
 * | `--max-client-batch-size`   | `BERTFORGE_MAX_CLIENT_BATCH_SIZE`    | 64      | inputs in one batch request; beyond it 413 / RESOURCE_EXHAUSTED |
 * | `--max-input-length`        | `BERTFORGE_MAX_INPUT_LENGTH`         | 512     | tokens per input (capped by the model's own maximum); longer input is truncated |
 * | `--memory-budget-mb`        | `BERTFORGE_MEMORY_BUDGET_MB`         | 4096    | resident models together; least recently used unloaded first |
 * | `--reload-interval-ms`      | `BERTFORGE_RELOAD_INTERVAL_MS`       | 10000   | store polling for new versions (hot reload); 0 turns it off |
 * | `--auto-load`               | `BERTFORGE_AUTO_LOAD`                | true    | a request for a model in the store loads it; false: only Load does |
 * | `--max-body-bytes`          | `BERTFORGE_MAX_BODY_BYTES`           | 8388608 | largest HTTP body; beyond it 413 |
 * | `--engine-in-process`       | `BERTFORGE_ENGINE_IN_PROCESS`        | false   | the native engine runs on the event loop: no worker thread per model, but a forward pass stalls every connection and health check while it runs |
 */
import { createLogger, type Settings } from "../shared/config/mod.ts";
import { openConfiguredStore } from "../shared/config/mod.ts";
import { InvalidArgument } from "../shared/errors.ts";
import { type Handlers, type RunningServer, serve } from "../shared/rpc/mod.ts";
import { runMain } from "../shared/rpc/main.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { Batcher } from "./batcher.ts";
import { type RunningHttp, serveHttp } from "./http.ts";
import { Inference } from "./infer.ts";
import { InferenceMetrics } from "./metrics.ts";
import { Registry } from "./registry.ts";
import { inferenceHandlers } from "./service.ts";
import { MAX_REQUEST_TEXT_BYTES } from "../shared/text/input.ts";

export const INFERENCE_FLAGS = [
  "models",
  "max-batch-tokens",
  "max-batch-requests",
  "max-concurrent-requests",
  "max-client-batch-size",
  "max-input-length",
  "memory-budget-mb",
  "reload-interval-ms",
  "auto-load",
  "max-body-bytes",
  "engine-in-process",
];

export interface InferenceSettings {
  models: Array<{ name: string; version?: string }>;
  maxBatchTokens: number;
  maxBatchRequests: number;
  maxConcurrentRequests: number;
  maxClientBatchSize: number;
  maxInputLength: number;
  memoryBudgetMb: number;
  reloadIntervalMs: number;
  autoLoad: boolean;
  maxBodyBytes: number;
  engineInProcess: boolean;
}

const ENV: Record<string, string> = Object.fromEntries(
  INFERENCE_FLAGS.map((flag) => [flag, `BERTFORGE_${flag.toUpperCase().replace(/-/g, "_")}`]),
);

function envOf(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** The service's own knobs from the settings' flags, then the environment, then defaults. */
export function inferenceSettings(
  settings: Pick<Settings, "flags">,
  env: (name: string) => string | undefined = envOf,
): InferenceSettings {
  const raw = (flag: string): [string | undefined, string] => {
    const value = settings.flags[flag];
    if (typeof value === "string" && value !== "") return [value, `--${flag}`];
    return [env(ENV[flag]!), ENV[flag]!];
  };
  const int = (flag: string, fallback: number, min: number): number => {
    const [value, source] = raw(flag);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgument(`${source} must be an integer >= ${min}: got "${value}"`);
    }
    return n;
  };
  const [modelsRaw, modelsSource] = raw("models");
  const models = (modelsRaw ?? "").split(",").map((m) => m.trim()).filter((m) => m !== "").map((m) => {
    const [name, version, ...rest] = m.split("@");
    if (!name || rest.length > 0) {
      throw new InvalidArgument(`${modelsSource} must be NAME or NAME@VERSION, comma-separated: got "${m}"`);
    }
    return { name, ...(version ? { version } : {}) };
  });
  const bool = (flag: string, fallback: boolean): boolean => {
    // A bare `--engine-in-process` parses as the empty string: the flag given means true.
    if (settings.flags[flag] === "") return true;
    const [value, source] = raw(flag);
    if (value === undefined) return fallback;
    if (!["true", "false", "1", "0"].includes(value)) {
      throw new InvalidArgument(`${source} must be true or false: got "${value}"`);
    }
    return value === "true" || value === "1";
  };
  const out: InferenceSettings = {
    models,
    maxBatchTokens: int("max-batch-tokens", 4096, 1),
    maxBatchRequests: int("max-batch-requests", 64, 1),
    maxConcurrentRequests: int("max-concurrent-requests", 512, 1),
    maxClientBatchSize: int("max-client-batch-size", 64, 1),
    maxInputLength: int("max-input-length", 512, 4),
    memoryBudgetMb: int("memory-budget-mb", 4096, 1),
    reloadIntervalMs: int("reload-interval-ms", 10_000, 0),
    autoLoad: bool("auto-load", true),
    // Room for the request text limit shared with gRPC (MAX_REQUEST_TEXT_BYTES) even \uXXXX-escaped: the text
    // limit, not the body's, decides what a request may hold.
    maxBodyBytes: int("max-body-bytes", 2 * MAX_REQUEST_TEXT_BYTES, 1024),
    engineInProcess: bool("engine-in-process", false),
  };
  return out;
}

/** A running inference service: both servers and what they share (tests and benchmarks reach in). */
export interface InferenceService {
  grpc: RunningServer;
  http: RunningHttp;
  registry: Registry;
  batcher: Batcher;
  inference: Inference;
  metrics: InferenceMetrics;
  /** Resolves once the default models are loaded (health SERVING). */
  ready: Promise<void>;
  shutdown(reason?: string): Promise<void>;
}

export interface StartOptions {
  /** The service's knobs; default from settings.flags and the environment. */
  inference?: Partial<InferenceSettings>;
  /** An already open store (tests); default the one the settings name. */
  store?: ObjectStore;
  /** Stop on SIGTERM/SIGINT. @default true */
  handleSignals?: boolean;
}

/** Starts gRPC and HTTP; resolves once both listen (default models keep loading in the background). */
export async function startInference(
  settings: Settings,
  options: StartOptions = {},
): Promise<InferenceService> {
  const knobs = { ...inferenceSettings(settings), ...options.inference };
  const log = createLogger("inference", settings.logLevel);
  const logFn = (level: "info" | "warn" | "error", message: string, fields?: Record<string, unknown>) =>
    log[level](message, fields);
  const store = options.store ?? openConfiguredStore(settings);
  const metrics = new InferenceMetrics();
  const batcher = new Batcher({
    maxBatchTokens: knobs.maxBatchTokens,
    maxBatchRequests: knobs.maxBatchRequests,
    maxConcurrentRequests: knobs.maxConcurrentRequests,
    metrics,
  });
  const registry = new Registry({
    store,
    backend: settings.backend,
    ...(settings.threads ? { threads: settings.threads } : {}),
    memoryBudgetBytes: knobs.memoryBudgetMb * 1024 * 1024,
    maxInputLength: knobs.maxInputLength,
    maxBatchTokens: knobs.maxBatchTokens,
    autoLoad: knobs.autoLoad,
    engineInProcess: knobs.engineInProcess,
    reloadIntervalMs: knobs.reloadIntervalMs,
    metrics,
    log: logFn,
  });
  if (knobs.models[0]) registry.defaultName = knobs.models[0].name;
  const inference = new Inference(registry, batcher, { maxClientBatchSize: knobs.maxClientBatchSize });
  let isReady = knobs.models.length === 0;
  let http: RunningHttp | undefined;
  const grpc = await serve({
    service: "InferenceService",
    settings,
    handlers: inferenceHandlers({ inference, registry, metrics }) as Handlers,
    initialStatus: isReady ? "SERVING" : "NOT_SERVING",
    handleSignals: options.handleSignals ?? true,
    onShutdown: async () => {
      await http?.shutdown().catch(() => {});
      await batcher.close();
      await registry.close();
      await store.close().catch(() => {});
    },
  });
  try {
    const tls = settings.tls?.certFile && settings.tls.keyFile
      ? {
        cert: await Deno.readTextFile(settings.tls.certFile),
        key: await Deno.readTextFile(settings.tls.keyFile),
      }
      : undefined;
    http = await serveHttp({
      host: settings.host,
      port: settings.httpPort,
      inference,
      registry,
      metrics,
      ready: () => isReady,
      maxBodyBytes: knobs.maxBodyBytes,
      ...(settings.authToken ? { authToken: settings.authToken } : {}),
      ...(tls ? { tls } : {}),
      log: logFn,
    });
  } catch (error) {
    await grpc.shutdown("the HTTP port could not be opened");
    throw error;
  }

  // Default models load after both ports listen, so probes see NOT_SERVING rather than a refused port.
  const ready = (async () => {
    for (const model of knobs.models) {
      for (let attempt = 1; !grpc.stopping.aborted; attempt++) {
        try {
          await registry.load(model, { setDefault: model === knobs.models[0] });
          break;
        } catch (error) {
          log.error("default model failed to load; retrying", {
            model: model.name,
            attempt,
            error: (error as Error)?.message ?? String(error),
          });
          await new Promise((resolve) => setTimeout(resolve, Math.min(30_000, 1000 * 2 ** attempt)));
        }
      }
    }
    if (grpc.stopping.aborted) return;
    isReady = true;
    grpc.setServing(true);
    if (knobs.models.length) {
      log.info("default models loaded: serving", { models: knobs.models.map((m) => m.name) });
    }
  })();

  return {
    grpc,
    http,
    registry,
    batcher,
    inference,
    metrics,
    ready,
    shutdown: (reason) => grpc.shutdown(reason),
  };
}

/** Starts the service with these settings; resolves once it listens (fleet and the e2e tests call it). */
export async function start(settings: Settings): Promise<RunningServer> {
  return (await startInference(settings)).grpc;
}

if (import.meta.main) {
  await runMain("inference", start, { extraFlags: { string: INFERENCE_FLAGS } });
}

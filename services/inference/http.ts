/**
 * InferenceService over HTTP/JSON (Deno.serve), for curl and any language. Bodies and answers are the gRPC
 * messages as JSON with the proto's field names (`text_pair`, `top_k`, `return_logits`), so one document
 * describes both; the model is in the path.
 *
 *   POST /v1/models/{name}:classify       {"text": ..} or {"texts": [..]}      (+ "version", "options")
 *   POST /v1/models/{name}:classifyPair   {"pair": {"text", "text_pair"}} or {"pairs": [..]}
 *   POST /v1/models/{name}:tag            {"text"} | {"texts"}
 *   POST /v1/models/{name}:fillMask       {"text"} | {"texts"}
 *   POST /v1/models/{name}:embed          {"text"} | {"texts"}
 *   POST /v1/models/{name}:tokenize       {"inputs": [{"text", "text_pair"}]} or {"text"}
 *   POST /v1/models/{name}:zeroShot       {"text"} | {"texts"}, "options": {"template", "labels"}
 *   POST /v1/models/{name}:load           {"version", "backend", "set_default"}
 *   DELETE /v1/models/{name}              unload
 *   GET  /v1/models                       ?page_size=&page_token=&loaded_only=true
 *   GET  /v1/models/{name}                ?version=
 *   GET  /health  /openapi.json  /metrics
 *
 * Errors are `{"error": {"code": "NOT_FOUND", "message": .., "status": 404}}` with the status mapped from the
 * gRPC code once (STATUS_OF_CODE): 400 INVALID_ARGUMENT, 404 NOT_FOUND, 409 FAILED_PRECONDITION and
 * ALREADY_EXISTS, 413 oversized body or batch, 429 full queue, 503 UNAVAILABLE or not ready, 504 deadline.
 * Answers carry `x-queue-time`, `x-inference-time`, `x-tokenization-time` and `x-total-time` (milliseconds)
 * and `x-model-name`/`x-model-version`, as TEI does. `x-request-timeout-ms` sets a deadline.
 */
import { BertforgeError, InvalidArgument, NotFound, Unauthenticated } from "../shared/errors.ts";
import { timingSafeEqual } from "node:crypto";
import { withHttpServerSpan } from "../shared/telemetry/otel.ts";
import { Buffer } from "node:buffer";
import type { Answer, CallOptions, Inference, Message } from "./infer.ts";
import { PayloadTooLarge } from "./infer.ts";
import { decodeUtf8, MAX_REQUEST_TEXT_BYTES } from "../shared/text/input.ts";
import type { InferenceMetrics } from "./metrics.ts";
import { openApiDocument } from "./openapi.ts";
import type { Registry } from "./registry.ts";
import { itemError, listModels, modelInfo, servedModel } from "./service.ts";

export const STATUS_OF_CODE: Record<string, number> = {
  OK: 200,
  INVALID_ARGUMENT: 400,
  OUT_OF_RANGE: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  FAILED_PRECONDITION: 409,
  ABORTED: 409,
  RESOURCE_EXHAUSTED: 429,
  CANCELLED: 499,
  INTERNAL: 500,
  UNIMPLEMENTED: 501,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 504,
};

export interface HttpOptions {
  host: string;
  port: number;
  inference: Inference;
  registry: Registry;
  metrics: InferenceMetrics;
  /** Whether the service is ready (default models loaded). */
  ready: () => boolean;
  /** Largest request body. @default twice MAX_REQUEST_TEXT_BYTES (services/shared/text/input.ts) */
  maxBodyBytes?: number;
  authToken?: string;
  tls?: { cert: string; key: string };
  log?: (level: "info" | "warn" | "error", message: string, fields?: Record<string, unknown>) => void;
}

export interface RunningHttp {
  readonly port: number;
  readonly url: string;
  shutdown(): Promise<void>;
  readonly finished: Promise<void>;
}

type Operation = (request: Message, call: CallOptions) => Promise<Answer>;

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

export function errorResponse(error: unknown): Response {
  const { code, message } = itemError(error);
  const status = error instanceof PayloadTooLarge ? 413 : STATUS_OF_CODE[code] ?? 500;
  const headers: Record<string, string> = status === 429 ? { "retry-after": "1" } : {};
  return json(status, { error: { code, message, status } }, headers);
}

/** Reads the body as JSON within `limit` bytes: 413 beyond it, 400 when it is not a JSON object. */
async function readJson(request: Request, limit: number): Promise<Message> {
  const declared = Number(request.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && declared > limit) {
    throw new PayloadTooLarge(
      `the request body is ${declared} bytes; at most ${limit} are accepted (--max-body-bytes)`,
    );
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    for await (const chunk of request.body) {
      size += chunk.length;
      if (size > limit) {
        throw new PayloadTooLarge(`the request body is over ${limit} bytes (--max-body-bytes)`);
      }
      chunks.push(chunk);
    }
  }
  if (size === 0) return {};
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  // Refused as gRPC refuses it, naming the first bad byte (a lenient decoder would make it U+FFFD).
  const text = decodeUtf8(bytes, "the request body");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new InvalidArgument(`the request body is not valid JSON: ${(error as Error).message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidArgument("the request body must be a JSON object");
  }
  return value as Message;
}

function tokenMatches(header: string | null, token: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(header?.trim() ?? "");
  if (!match) return false;
  const given = Buffer.from(match[1]!);
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** Chooses the unary or batch form of an operation from the body's fields. */
function operations(inference: Inference): Record<string, Operation> {
  const either = (single: Operation, batch: Operation, listField: string): Operation => (request, call) =>
    request[listField] !== undefined ? batch(request, call) : single(request, call);
  return {
    classify: either((r, c) => inference.classify(r, c), (r, c) => inference.classifyBatch(r, c), "texts"),
    classifyPair: either(
      (r, c) =>
        inference.classifyPair(
          r.pair === undefined && r.text !== undefined
            ? { ...r, pair: { text: r.text, text_pair: r.text_pair } }
            : r,
          c,
        ),
      (r, c) => inference.classifyPairBatch(r, c),
      "pairs",
    ),
    tag: either((r, c) => inference.tag(r, c), (r, c) => inference.tagBatch(r, c), "texts"),
    fillMask: either((r, c) => inference.fillMask(r, c), (r, c) => inference.fillMaskBatch(r, c), "texts"),
    embed: either((r, c) => inference.embed(r, c), (r, c) => inference.embedBatch(r, c), "texts"),
    zeroShot: either((r, c) => inference.zeroShot(r, c), (r, c) => inference.zeroShotBatch(r, c), "texts"),
    tokenize: (r, c) =>
      inference.tokenize(
        r.inputs === undefined && r.text !== undefined
          ? { ...r, inputs: [{ text: r.text, text_pair: r.text_pair }] }
          : r,
        c,
      ),
  };
}

const MODEL_PATH = /^\/v1\/models\/([^/:]+)(?::([A-Za-z]+))?$/;

/** How a request is counted and traced: a route of the table, never the raw path (see {@linkcode routeOf}). */
interface RouteLabel {
  /** The `method` label of the request metrics. */
  label: string;
  /** The span name: the route template. */
  span: string;
}

/**
 * The route-table entry a path falls under, or undefined for the probes and documents that are not counted.
 * Anything else, an unknown path or `:verb` included, is the one label `other`: labels from the raw path let
 * 20,000 random paths grow /metrics from 9 KB to 101 MB.
 */
export function routeOf(path: string, verbs: ReadonlySet<string>): RouteLabel | undefined {
  if (path === "/health" || path === "/metrics" || path === "/openapi.json") return undefined;
  if (path === "/v1/models" || path === "/v1/models/") return { label: "models", span: "/v1/models" };
  const match = MODEL_PATH.exec(path);
  if (match && !match[2]) return { label: "models", span: "/v1/models/{model}" };
  if (match && verbs.has(match[2]!)) return { label: match[2]!, span: `/v1/models/{model}:${match[2]}` };
  return { label: "other", span: "other" };
}

/** Starts the HTTP server; resolves once it listens. */
export async function serveHttp(options: HttpOptions): Promise<RunningHttp> {
  const { inference, registry, metrics } = options;
  const limit = options.maxBodyBytes ?? 2 * MAX_REQUEST_TEXT_BYTES;
  const ops = operations(inference);
  const verbs = new Set([...Object.keys(ops), "load"]);
  const log = options.log ?? (() => {});

  const route = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const path = url.pathname;
    const method = request.method;
    if (path === "/health" && (method === "GET" || method === "HEAD")) {
      const ready = options.ready();
      return json(ready ? 200 : 503, { status: ready ? "SERVING" : "NOT_SERVING" });
    }
    if (path === "/metrics" && method === "GET") {
      return new Response(metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } });
    }
    if (path === "/openapi.json" && method === "GET") return json(200, openApiDocument());
    if (options.authToken && !tokenMatches(request.headers.get("authorization"), options.authToken)) {
      throw new Unauthenticated("authorization is missing or not the expected bearer token");
    }
    if (path === "/v1/models" || path === "/v1/models/") {
      if (method !== "GET") return methodNotAllowed("GET");
      const pageSize = url.searchParams.get("page_size");
      return json(
        200,
        await listModels(registry, {
          page: {
            page_size: pageSize ? Number(pageSize) : 0,
            page_token: url.searchParams.get("page_token") ?? "",
          },
          loaded_only: url.searchParams.get("loaded_only") === "true",
        }),
      );
    }
    const match = MODEL_PATH.exec(path);
    if (!match) throw new NotFound(`no route ${method} ${path}: see /openapi.json`);
    let name: string;
    try {
      name = decodeURIComponent(match[1]!);
    } catch {
      throw new InvalidArgument(`the model name in ${path} is not valid percent-encoding`);
    }
    const verb = match[2];
    if (!verb) {
      if (method === "GET") {
        return json(
          200,
          await modelInfo(registry, { model: { name, version: url.searchParams.get("version") ?? "" } }),
        );
      }
      if (method === "DELETE") {
        const instance = registry.unload({ name, version: url.searchParams.get("version") ?? "" });
        return json(200, { model: { name: instance.name, version: instance.version } });
      }
      return methodNotAllowed("GET, DELETE");
    }
    if (method !== "POST") return methodNotAllowed("POST");
    const body = await readJson(request, limit);
    if (verb === "load") {
      const { instance, seconds } = await registry.load(
        { name, version: typeof body.version === "string" ? body.version : "" },
        {
          backend: typeof body.backend === "string" ? body.backend : "",
          setDefault: body.set_default === true,
        },
      );
      return json(200, {
        model: servedModel(registry, instance, "MODEL_STATE_READY"),
        load_seconds: seconds,
      });
    }
    const op = ops[verb];
    if (!op) {
      throw new NotFound(`unknown operation :${verb}; one of :${Object.keys(ops).join(", :")}, :load`);
    }
    const timeout = Number(request.headers.get("x-request-timeout-ms") ?? "NaN");
    const call: CallOptions = {
      signal: request.signal,
      ...(Number.isFinite(timeout) && timeout > 0 ? { deadline: Date.now() + timeout } : {}),
    };
    const started = performance.now();
    const answer = await op({ ...body, model: name }, call);
    const ms = (x: number) => String(Math.round(x));
    return json(200, answer.response, {
      "x-queue-time": ms(answer.timing.queueMs),
      "x-inference-time": ms(answer.timing.inferenceMs),
      "x-tokenization-time": ms(answer.timing.tokenizeMs),
      "x-total-time": ms(performance.now() - started),
      "x-model-name": answer.response.model?.name ?? name,
      "x-model-version": answer.response.model?.version ?? "",
    });
  };

  const handler = async (request: Request): Promise<Response> => {
    const started = performance.now();
    const path = new URL(request.url).pathname;
    const counted = routeOf(path, verbs);
    const respond = async (): Promise<Response> => {
      try {
        return await route(request);
      } catch (error) {
        if (!(error instanceof BertforgeError)) {
          log("error", "http request failed", { path, error: (error as Error)?.stack ?? String(error) });
        }
        return errorResponse(error);
      }
    };
    if (!counted) return await respond();
    // One route template per span name too: a span name per model or path would not aggregate.
    const response = await withHttpServerSpan(request, counted.span, respond);
    metrics.requests.inc({ method: counted.label, protocol: "http", code: String(response.status) });
    metrics.requestTime.observe(performance.now() - started, { method: counted.label, protocol: "http" });
    return response;
  };

  let resolveListening!: (port: number) => void;
  const listening = new Promise<number>((resolve) => (resolveListening = resolve));
  const server = Deno.serve({
    hostname: options.host,
    port: options.port,
    ...(options.tls ? { cert: options.tls.cert, key: options.tls.key } : {}),
    onListen: ({ port }) => resolveListening(port),
    onError: (error) => errorResponse(error),
  }, handler);
  const port = await listening;
  const scheme = options.tls ? "https" : "http";
  const hostForUrl = options.host.includes(":") ? `[${options.host}]` : options.host;
  log("info", "http listening", { url: `${scheme}://${hostForUrl}:${port}` });
  return {
    port,
    url: `${scheme}://${hostForUrl === "0.0.0.0" ? "127.0.0.1" : hostForUrl}:${port}`,
    shutdown: () => server.shutdown(),
    finished: server.finished,
  };
}

function methodNotAllowed(allow: string): Response {
  return json(405, {
    error: { code: "INVALID_ARGUMENT", message: `method not allowed: use ${allow}`, status: 405 },
  }, {
    allow,
  });
}

/**
 * OpenTelemetry tracing for bertforge. Off unless configured by the standard variables
 * (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER` =
 * `otlp`|`console`; `OTEL_SDK_DISABLED=true` wins) or given an exporter (tests pass an in-memory one).
 * While off, every helper here is a cheap no-op.
 *
 * The trace context travels in gRPC metadata as the W3C `traceparent`/`tracestate` headers: the rpc layer
 * injects it on every client call ({@linkcode tracingClientInterceptor}) and continues it on every server
 * call ({@linkcode startServerSpan}), so one trace shows bertctl → a service → its job → the store. Work that
 * runs after its call returned (jobs, inference batches) starts from a context captured at the call
 * ({@linkcode captureTraceContext}); where that is lost (a job resumed by another process) it links back
 * through a stored `traceparent` instead. docs/tracing.md lists every span and attribute.
 */
import {
  type Attributes,
  type Context,
  context,
  INVALID_SPAN_CONTEXT,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { Resource } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import * as grpc from "@grpc/grpc-js";

export interface TelemetryOptions {
  /** `service.name` of every span (`bertforge-tokenizer`, `bertctl`, ...). */
  serviceName: string;
  /** Export here instead of what the environment says; turns tracing on. */
  exporter?: SpanExporter;
  /** Export each span as it ends instead of in batches (tests). @default false, true with `exporter` */
  simple?: boolean;
  /** @default Deno.env.get */
  env?: (name: string) => string | undefined;
}

export interface Telemetry {
  readonly enabled: boolean;
  /** Exports what is buffered. */
  forceFlush(): Promise<void>;
  /** Flushes, then unregisters the provider so a later setupTelemetry() can register again. */
  shutdown(): Promise<void>;
}

const TRACER_NAME = "bertforge";
let active: { provider: NodeTracerProvider; serviceName: string } | undefined;

function defaultEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Which exporter the standard variables ask for, or undefined when tracing stays off. */
export function exporterFromEnv(
  env: (name: string) => string | undefined = defaultEnv,
): SpanExporter | undefined {
  if ((env("OTEL_SDK_DISABLED") ?? "").toLowerCase() === "true") return undefined;
  const named = (env("OTEL_TRACES_EXPORTER") ?? "").toLowerCase().split(",").map((s) => s.trim()).filter(
    Boolean,
  );
  if (named.includes("none")) return undefined;
  if (named.includes("console")) return new ConsoleSpanExporter();
  const endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || env("OTEL_EXPORTER_OTLP_ENDPOINT");
  if (!named.includes("otlp") && !endpoint) return undefined;
  const protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") || env("OTEL_EXPORTER_OTLP_PROTOCOL");
  if (protocol && protocol !== "http/json") {
    // Only the JSON encoding is bundled; every collector's OTLP/HTTP receiver (port 4318) takes it too.
    console.warn(
      `telemetry: OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not supported, exporting http/json instead ` +
        "(point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's OTLP/HTTP port, usually 4318)",
    );
  }
  // The OTLP/HTTP exporter reads the endpoint, headers and timeout variables itself.
  return new OTLPTraceExporter();
}

/**
 * The resource of every span: `service.name` as the code names the process, then what the standard
 * variables add (`OTEL_RESOURCE_ATTRIBUTES=k8s.pod.name=x,deployment.environment=prod`; `OTEL_SERVICE_NAME`
 * overrides the name, as the specification says), so operators can tag pods without code changes.
 */
export function resourceAttributes(
  serviceName: string,
  env: (name: string) => string | undefined = defaultEnv,
): Attributes {
  const attributes: Attributes = { [ATTR_SERVICE_NAME]: serviceName };
  for (const pair of (env("OTEL_RESOURCE_ATTRIBUTES") ?? "").split(",")) {
    const at = pair.indexOf("=");
    if (at <= 0) continue;
    try {
      attributes[decodeURIComponent(pair.slice(0, at).trim())] = decodeURIComponent(
        pair.slice(at + 1).trim(),
      );
    } catch {
      // A malformed percent-escape drops that pair only, as the SDKs do.
    }
  }
  const name = env("OTEL_SERVICE_NAME");
  if (name) attributes[ATTR_SERVICE_NAME] = name;
  return attributes;
}

/**
 * Turns tracing on for this process when configured; otherwise returns a disabled handle. Safe to call
 * once per process (a second call while one is active returns a disabled handle and changes nothing).
 */
export function setupTelemetry(options: TelemetryOptions): Telemetry {
  const exporter = options.exporter ?? exporterFromEnv(options.env ?? defaultEnv);
  if (!exporter || active) {
    return { enabled: false, forceFlush: () => Promise.resolve(), shutdown: () => Promise.resolve() };
  }
  const simple = options.simple ?? options.exporter !== undefined;
  const processor: SpanProcessor = simple
    ? new SimpleSpanProcessor(exporter)
    : new BatchSpanProcessor(exporter);
  const provider = new NodeTracerProvider({
    resource: new Resource(resourceAttributes(options.serviceName, options.env ?? defaultEnv)),
    spanProcessors: [processor],
  });
  // register() installs the AsyncLocalStorage context manager, so the active span follows awaits.
  provider.register({ propagator: new W3CTraceContextPropagator() });
  const handle = { provider, serviceName: options.serviceName };
  active = handle;
  // An unreachable collector must not fail the program (bertctl would exit 1 after a successful command):
  // the export error becomes one warning line.
  const warnExportFailed = (error: unknown) =>
    console.warn(
      `telemetry: spans of ${options.serviceName} could not be exported: ${
        (error as Error)?.message ?? error
      }`,
    );
  return {
    enabled: true,
    forceFlush: () => provider.forceFlush().catch(warnExportFailed),
    shutdown: async () => {
      if (active !== handle) return;
      active = undefined;
      try {
        await provider.shutdown().catch(warnExportFailed);
      } finally {
        trace.disable();
        context.disable();
        propagation.disable();
      }
    },
  };
}

/** True while a tracer provider set up here is active. */
export function tracingEnabled(): boolean {
  return active !== undefined;
}

export function tracer(): Tracer {
  return trace.getTracer(TRACER_NAME);
}

const metadataSetter = {
  set(carrier: grpc.Metadata, key: string, value: string) {
    carrier.set(key, value);
  },
};

const metadataGetter = {
  get(carrier: grpc.Metadata, key: string): string[] | undefined {
    const values = carrier.get(key);
    return values.length > 0 ? values.map(String) : undefined;
  },
  keys(carrier: grpc.Metadata): string[] {
    return Object.keys(carrier.getMap());
  },
};

/** Writes the trace context of `ctx` into gRPC metadata (`traceparent`, `tracestate`). */
export function injectTraceContext(metadata: grpc.Metadata, ctx: Context = context.active()): void {
  propagation.inject(ctx, metadata, metadataSetter);
}

/** The context a caller sent in gRPC metadata (the root context when it sent none). */
export function extractTraceContext(metadata: grpc.Metadata): Context {
  return propagation.extract(context.active(), metadata, metadataGetter);
}

function rpcAttributes(path: string): Attributes {
  // path: "/bertforge.v1.TokenizerService/Tokenize"
  const [service = "", method = ""] = path.replace(/^\//, "").split("/");
  return { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method };
}

const headersGetter = {
  get(carrier: Headers, key: string): string | undefined {
    return carrier.get(key) ?? undefined;
  },
  keys(carrier: Headers): string[] {
    return [...carrier.keys()];
  },
};

/**
 * Runs an HTTP handler in a SERVER span named `METHOD route` (`route` is the low-cardinality template,
 * e.g. `/v1/models/{model}:classify`), continuing a `traceparent` the caller sent; records the status.
 */
export async function withHttpServerSpan(
  request: Request,
  route: string,
  fn: () => Promise<Response>,
): Promise<Response> {
  if (!tracingEnabled()) return await fn();
  const parent = propagation.extract(ROOT_CONTEXT, request.headers, headersGetter);
  const span = tracer().startSpan(`${request.method} ${route}`, {
    kind: SpanKind.SERVER,
    attributes: {
      "http.request.method": request.method,
      "http.route": route,
      "url.path": new URL(request.url).pathname,
    },
  }, parent);
  try {
    const response = await context.with(trace.setSpan(parent, span), fn);
    span.setAttribute("http.response.status_code", response.status);
    if (response.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    return response;
  } catch (error) {
    span.recordException(error as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
    throw error;
  } finally {
    span.end();
  }
}

export interface ServerSpan {
  /** The context to run the handler in (the span is its active span). */
  readonly context: Context;
  readonly span: Span;
  /** Ends the span with the call's gRPC status. */
  end(code: number, message?: string): void;
}

/** Starts the SERVER span of an incoming call, continuing the caller's trace from its metadata. */
export function startServerSpan(path: string, metadata: grpc.Metadata): ServerSpan {
  const parent = tracingEnabled() ? extractTraceContext(metadata) : context.active();
  const span = tracer().startSpan(path.replace(/^\//, ""), {
    kind: SpanKind.SERVER,
    attributes: rpcAttributes(path),
  }, parent);
  return {
    context: trace.setSpan(parent, span),
    span,
    end(code, message) {
      span.setAttribute("rpc.grpc.status_code", code);
      if (code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, ...(message ? { message } : {}) });
      span.end();
    },
  };
}

/**
 * A grpc-js client interceptor: each call gets a CLIENT span, child of the active span, and carries its
 * context to the server in metadata. The rpc layer's client() installs it.
 */
export function tracingClientInterceptor(): grpc.Interceptor {
  return (options, nextCall) => {
    if (!tracingEnabled()) return new grpc.InterceptingCall(nextCall(options));
    const path = options.method_definition.path;
    const parent = context.active();
    const span = tracer().startSpan(path.replace(/^\//, ""), {
      kind: SpanKind.CLIENT,
      attributes: rpcAttributes(path),
    }, parent);
    const spanContext = trace.setSpan(parent, span);
    const call = nextCall(options);
    return new grpc.InterceptingCall(call, {
      start(metadata, _listener, next) {
        injectTraceContext(metadata, spanContext);
        next(metadata, {
          onReceiveStatus(status, nextStatus) {
            span.setAttribute("rpc.grpc.status_code", status.code);
            if (status.code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, message: status.details });
            span.end();
            nextStatus(status);
          },
        });
      },
    });
  };
}

export interface SpanOptions {
  /** @default SpanKind.INTERNAL */
  kind?: SpanKind;
  /**
   * The context to start in instead of the active one: work that runs after its call returned (a queued
   * job) passes the context captured at submit with {@linkcode captureTraceContext}.
   */
  parent?: Context;
  /** Spans this one relates to outside its parent (the requests an inference batch served). */
  links?: SpanContext[];
}

/**
 * Runs `fn` inside a new span (INTERNAL unless `options.kind` says otherwise), recording a thrown error.
 * Attributes may be added inside through the span argument (`span.setAttribute("loss", 2.1)`).
 */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T> | T,
  options: SpanOptions = {},
): Promise<T> {
  if (!tracingEnabled()) return await fn(trace.wrapSpanContext(INVALID_SPAN_CONTEXT));
  const spanOptions = {
    attributes,
    ...(options.kind !== undefined ? { kind: options.kind } : {}),
    ...(options.links?.length ? { links: options.links.map((context) => ({ context })) } : {}),
  };
  return await tracer().startActiveSpan(
    name,
    spanOptions,
    options.parent ?? context.active(),
    async (span) => {
      try {
        return await fn(span);
      } catch (error) {
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}

/** The id of the active trace (32 hex digits), or undefined when none: handy in log lines. */
export function activeTraceId(): string | undefined {
  const spanContext = trace.getSpanContext(context.active());
  return spanContext && trace.isSpanContextValid(spanContext) ? spanContext.traceId : undefined;
}

/**
 * The active context when tracing is on (undefined when off), to hand to work that runs later under
 * another context: `withSpan(name, attrs, fn, { parent: captured })`.
 */
export function captureTraceContext(): Context | undefined {
  return tracingEnabled() ? context.active() : undefined;
}

/** The active span's context when it is a real (recording or remote) one: what a link points at. */
export function activeSpanContext(): SpanContext | undefined {
  if (!tracingEnabled()) return undefined;
  const spanContext = trace.getSpanContext(context.active());
  return spanContext && trace.isSpanContextValid(spanContext) ? spanContext : undefined;
}

/**
 * The active context as a W3C `traceparent` string (undefined when tracing is off or no span is active): what
 * outlives the process, e.g. in a job's stored state, to be linked back with {@linkcode spanContextFromTraceparent}.
 */
export function activeTraceparent(): string | undefined {
  if (!activeSpanContext()) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent;
}

/** The span context a `traceparent` string names, when it is a valid one. */
export function spanContextFromTraceparent(traceparent: string): SpanContext | undefined {
  if (!tracingEnabled()) return undefined;
  return spanContextOf(propagation.extract(ROOT_CONTEXT, { traceparent }));
}

/** The span context a context carries, when it is a valid one (to link to it). */
export function spanContextOf(ctx: Context): SpanContext | undefined {
  const spanContext = trace.getSpanContext(ctx);
  return spanContext && trace.isSpanContextValid(spanContext) ? spanContext : undefined;
}

/**
 * Starts a span by hand for work whose start and end are not one function call (a batch assembled in one
 * place and finished in another); the caller ends it. A non-recording span while tracing is off.
 */
export function startSpan(name: string, attributes: Attributes, options: SpanOptions = {}): Span {
  if (!tracingEnabled()) return trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
  return tracer().startSpan(name, {
    attributes,
    ...(options.kind !== undefined ? { kind: options.kind } : {}),
    ...(options.links?.length ? { links: options.links.map((context) => ({ context })) } : {}),
  }, options.parent ?? context.active());
}

export { ROOT_CONTEXT, SpanKind, SpanStatusCode };
export type { Context, SpanContext };

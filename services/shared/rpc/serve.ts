/**
 * serve(): the one way a bertforge service starts. It adds to the service's own handlers everything a
 * service in this fleet must have: grpc.health.v1.Health with a per-service status, server reflection
 * (`grpcurl list`/`describe`), one error mapping (a thrown BertforgeError becomes exactly one status with
 * its message; anything else INTERNAL, logged), a SERVER span per call continuing the caller's trace,
 * optional bearer-token auth and TLS, message size limits, and a graceful shutdown on SIGTERM/SIGINT that
 * stops taking calls, lets in-flight ones finish within a grace period, then cuts the rest.
 *
 * Handlers are plain async functions; the method's shape in the proto decides how each is called:
 * - unary:            `(request, ctx) => response`
 * - server streaming: `(request, ctx) => AsyncIterable<response>` (an `async function*`), or push with
 *                     `await ctx.send(message)` and return
 * - client streaming: `(requests: AsyncIterable, ctx) => response`
 * - bidirectional:    `(requests: AsyncIterable, ctx) => AsyncIterable<response>` (or `ctx.send`)
 * A method without a handler answers UNIMPLEMENTED ("... is not implemented yet").
 */
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { createHash, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import { createLogger, type Logger } from "../config/log.ts";
import type { Settings } from "../config/settings.ts";
import { setupTelemetry, startServerSpan, type Telemetry } from "../telemetry/otel.ts";
import { context } from "@opentelemetry/api";
import { HealthService, type ServingStatus } from "./health.ts";
import {
  bertforgePackageDefinition,
  fullServiceName,
  HEALTH_SERVICE,
  healthPackageDefinition,
  healthServiceDefinition,
  serviceDefinition,
  type ServiceName,
} from "./load.ts";
import { grpcCodeName, toStatus } from "./status.ts";
import { readMessages } from "./_read.ts";

// deno-lint-ignore no-explicit-any
export type Message = Record<string, any>;

/** What a handler knows about its call besides the request. */
export interface CallContext {
  /** The method name, `Tokenize`. */
  readonly method: string;
  /** The full path, `/bertforge.v1.TokenizerService/Tokenize`. */
  readonly path: string;
  readonly metadata: grpc.Metadata;
  /** Aborted when the client cancels, the deadline passes, or the server stops: pass it down. */
  readonly signal: AbortSignal;
  /** The client's deadline, if it set one. */
  readonly deadline: Date | undefined;
  readonly peer: string;
  /** The service's logger. */
  readonly log: Logger;
  /** Aborted when the server starts draining: long streams (job watches) should end soon with UNAVAILABLE. */
  readonly stopping: AbortSignal;
  /** Streaming responses: writes one message, waiting while the client is slow (back-pressure). */
  send(message: Message): Promise<void>;
}

export type UnaryHandler = (request: Message, ctx: CallContext) => Promise<Message> | Message;
export type ServerStreamHandler = (
  request: Message,
  ctx: CallContext,
) => AsyncIterable<Message> | Iterable<Message> | Promise<void>;
export type ClientStreamHandler = (
  requests: AsyncIterable<Message>,
  ctx: CallContext,
) => Promise<Message> | Message;
export type BidiStreamHandler = (
  requests: AsyncIterable<Message>,
  ctx: CallContext,
) => AsyncIterable<Message> | Iterable<Message> | Promise<void>;
/**
 * Any of the four shapes. Deliberately loose in its parameter so handlers can destructure their request
 * (`({ name }, ctx) => ...`) without casts; the proto is the schema.
 */
// deno-lint-ignore no-explicit-any
export type Handler = (input: any, ctx: CallContext) => any;
/** Handlers by method name as written in the proto (`StartTrainVocab`, `WatchJob`). */
export type Handlers = Record<string, Handler>;

export interface ServeOptions {
  service: ServiceName;
  handlers: Handlers;
  /** From loadSettings(); host, port, auth token, TLS, log level and grace period come from here. */
  settings?: Pick<Settings, "host" | "port" | "authToken" | "tls" | "logLevel" | "shutdownGraceMs">;
  /** Overrides settings.host. @default "127.0.0.1" */
  host?: string;
  /** Overrides settings.port; 0 picks a free port (tests). */
  port?: number;
  /** Overrides settings.authToken; an empty string turns auth off. */
  authToken?: string;
  /** PEM contents (not paths) overriding settings.tls. */
  tls?: { cert: Uint8Array | string; key: Uint8Array | string };
  /** Largest message received or sent; bigger ones fail RESOURCE_EXHAUSTED. @default 64 MiB */
  maxMessageBytes?: number;
  /** How long shutdown waits for in-flight calls before cutting them. @default settings or 10 s */
  shutdownGraceMs?: number;
  /** Stop gracefully on SIGTERM and SIGINT. @default true */
  handleSignals?: boolean;
  /** Initial health of the service; set NOT_SERVING while something must load first. @default "SERVING" */
  initialStatus?: ServingStatus;
  log?: Logger;
  /** Runs after the server has drained and before serve's `finished` resolves (close stores, workers). */
  onShutdown?: () => Promise<void> | void;
  /** `service.name` for traces. @default "bertforge-<service>" */
  telemetryName?: string;
}

export interface RunningServer {
  readonly service: ServiceName;
  /** `host:port` actually bound. */
  readonly address: string;
  readonly port: number;
  readonly health: HealthService;
  /** Sets this service's health (and the server's, `""`). */
  setServing(serving: boolean): void;
  /** Drains and stops; resolves when stopped. Calling it again returns the same promise. */
  shutdown(reason?: string): Promise<void>;
  /** Resolves once the server has stopped (after a signal or shutdown()). */
  readonly finished: Promise<void>;
  /** Aborted when shutdown begins. */
  readonly stopping: AbortSignal;
  readonly server: grpc.Server;
}

const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Methods that never need the bearer token: probes and tools must work without secrets. */
function isAuthExempt(path: string): boolean {
  return path.startsWith(`/${HEALTH_SERVICE}/`) || path.startsWith("/grpc.reflection.");
}

/**
 * Compares SHA-256 digests, not the tokens: digests always have the same length, so neither an early
 * return on a length mismatch nor the comparison's time tells a caller how long the token is.
 */
function tokenMatches(header: string, token: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  const given = createHash("sha256").update(match?.[1] ?? "").digest();
  const expected = createHash("sha256").update(token).digest();
  return timingSafeEqual(given, expected) && match !== null;
}

function authInterceptor(token: string): grpc.ServerInterceptor {
  return (methodDescriptor, call) => {
    if (isAuthExempt(methodDescriptor.path)) return new grpc.ServerInterceptingCall(call);
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            const header = metadata.get("authorization")[0];
            if (typeof header === "string" && tokenMatches(header, token)) {
              nextMetadata(metadata);
            } else {
              call.sendStatus({
                code: grpc.status.UNAUTHENTICATED,
                details: header === undefined
                  ? "authorization is missing: send the header `authorization: Bearer <BERTFORGE_AUTH_TOKEN>`"
                  : "authorization is not the expected bearer token",
                metadata: new grpc.Metadata(),
              });
            }
          },
        });
      },
    });
  };
}

function isIterable(value: unknown): value is AsyncIterable<Message> | Iterable<Message> {
  return value !== null && typeof value === "object" &&
    (Symbol.asyncIterator in value || Symbol.iterator in value);
}

type AnyServerCall =
  | grpc.ServerUnaryCall<Message, Message>
  | grpc.ServerReadableStream<Message, Message>
  | grpc.ServerWritableStream<Message, Message>
  | grpc.ServerDuplexStream<Message, Message>;

/** Writes one message honouring back-pressure; fails if the call is gone. */
function writer(
  call: grpc.ServerWritableStream<Message, Message> | grpc.ServerDuplexStream<Message, Message>,
) {
  return (message: Message): Promise<void> => {
    if (call.cancelled) return Promise.reject(new Error("the call was cancelled"));
    return new Promise((resolve, reject) => {
      try {
        if (call.write(message)) resolve();
        else call.once("drain", () => resolve());
      } catch (error) {
        reject(error);
      }
    });
  };
}

/**
 * Starts a service. Resolves once it listens. See the module doc for the handler shapes.
 * Throws TypeError when a handler names a method the service does not have (a typo would otherwise
 * silently answer UNIMPLEMENTED).
 */
export async function serve(options: ServeOptions): Promise<RunningServer> {
  const { service } = options;
  const fullName = fullServiceName(service);
  const definition = serviceDefinition(service);
  for (const name of Object.keys(options.handlers)) {
    if (!(name in definition)) {
      throw new TypeError(
        `handlers.${name} is not a method of ${fullName}: methods are ${Object.keys(definition).join(", ")}`,
      );
    }
  }
  const settings = options.settings;
  const log = options.log ?? createLogger(service.replace(/Service$/, "").toLowerCase(), settings?.logLevel);
  const host = options.host ?? settings?.host ?? "127.0.0.1";
  const port = options.port ?? settings?.port ?? 0;
  const authToken = options.authToken ?? settings?.authToken ?? "";
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const graceMs = options.shutdownGraceMs ?? settings?.shutdownGraceMs ?? 10_000;

  let credentials = grpc.ServerCredentials.createInsecure();
  const tlsPem = options.tls ??
    (settings?.tls?.certFile && settings.tls.keyFile
      ? { cert: await Deno.readFile(settings.tls.certFile), key: await Deno.readFile(settings.tls.keyFile) }
      : undefined);
  if (tlsPem) {
    // Root certificates only matter for client certificates, which we do not ask for. Left null, grpc-js
    // passes its whole bundle of public roots, and Deno's TLS server then sends them all during the
    // handshake, which clients reject ("excessive message size"); the service's own chain keeps it small.
    credentials = grpc.ServerCredentials.createSsl(Buffer.from(tlsPem.cert), [{
      cert_chain: Buffer.from(tlsPem.cert),
      private_key: Buffer.from(tlsPem.key),
    }], false);
  }

  const telemetry: Telemetry = setupTelemetry({
    serviceName: options.telemetryName ?? `bertforge-${service.replace(/Service$/, "").toLowerCase()}`,
  });
  const stoppingController = new AbortController();
  const activeCalls = new Set<AbortController>();

  const server = new grpc.Server({
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    // Long job watches stay open for hours: keep idle connections alive through proxies.
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_permit_without_calls": 1,
    // Channelz bookkeeping costs on every call and nothing here reads it.
    "grpc.enable_channelz": 0,
    interceptors: authToken ? [authInterceptor(authToken)] : [],
  });

  const implementation: grpc.UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(definition)) {
    const handler = options.handlers[name];
    const path = method.path;
    const unimplemented = () => ({
      code: grpc.status.UNIMPLEMENTED,
      details: `${fullName}/${name} is not implemented yet`,
    });

    // Runs one call: context, span, cancellation, and exactly one status at the end.
    const run = (
      call: AnyServerCall,
      body: (ctx: CallContext) => Promise<Message | undefined>,
      finish: (error: grpc.ServerErrorResponse | null, response?: Message) => void,
    ) => {
      const started = performance.now();
      const controller = new AbortController();
      activeCalls.add(controller);
      const onCancel = () =>
        controller.abort(new Error("the client cancelled the call or its deadline passed"));
      const events = call as unknown as {
        on(e: string, f: () => void): void;
        off(e: string, f: () => void): void;
      };
      events.on("cancelled", onCancel);
      const deadline = call.getDeadline();
      const deadlineDate = deadline instanceof Date
        ? deadline
        : Number.isFinite(deadline)
        ? new Date(deadline as number)
        : undefined;
      const span = startServerSpan(path, call.metadata);
      const writable = method.responseStream
        ? writer(call as grpc.ServerWritableStream<Message, Message>)
        : undefined;
      const ctx: CallContext = {
        method: name,
        path,
        metadata: call.metadata,
        signal: controller.signal,
        deadline: deadlineDate,
        peer: call.getPeer(),
        log,
        stopping: stoppingController.signal,
        send: (message) => {
          if (!writable) {
            return Promise.reject(new TypeError(`${name} does not stream responses: return the response`));
          }
          return writable(message);
        },
      };
      let settled = false;
      const settle = (error: unknown, response?: Message) => {
        if (settled) return;
        settled = true;
        activeCalls.delete(controller);
        events.off("cancelled", onCancel);
        const ms = Math.round(performance.now() - started);
        if (error === undefined) {
          span.end(grpc.status.OK);
          log.debug("call", { method: name, code: "OK", ms });
          finish(null, response);
          return;
        }
        const status = toStatus(error);
        span.end(status.code, status.details);
        if (status.expected) {
          log.debug("call", { method: name, code: grpcCodeName(status.code), ms, message: status.details });
        } else {
          log.error("call failed", {
            method: name,
            code: grpcCodeName(status.code),
            ms,
            error: error instanceof Error ? (error.stack ?? error.message) : String(error),
          });
        }
        finish({ name: "Error", message: status.details, code: status.code, details: status.details });
      };
      context.with(span.context, () => body(ctx)).then(
        (response) => settle(undefined, response),
        (error) => settle(error),
      );
    };

    if (!handler) {
      implementation[name] = method.responseStream
        ? (call: grpc.ServerWritableStream<Message, Message>) => call.emit("error", unimplemented())
        : (_call: unknown, callback: grpc.sendUnaryData<Message>) => callback(unimplemented());
      continue;
    }

    if (!method.requestStream && !method.responseStream) {
      implementation[name] = (
        call: grpc.ServerUnaryCall<Message, Message>,
        callback: grpc.sendUnaryData<Message>,
      ) =>
        run(
          call,
          async (ctx) => await (handler as UnaryHandler)(call.request, ctx),
          (error, response) => error ? callback(error) : callback(null, response),
        );
    } else if (method.requestStream && !method.responseStream) {
      implementation[name] = (
        call: grpc.ServerReadableStream<Message, Message>,
        callback: grpc.sendUnaryData<Message>,
      ) =>
        run(
          call,
          async (ctx) => await (handler as ClientStreamHandler)(readMessages<Message>(call, ctx.signal), ctx),
          (error, response) => error ? callback(error) : callback(null, response),
        );
    } else {
      implementation[name] = (
        call: grpc.ServerWritableStream<Message, Message> | grpc.ServerDuplexStream<Message, Message>,
      ) =>
        run(
          call,
          async (ctx) => {
            const input = method.requestStream
              ? readMessages<Message>(call as grpc.ServerDuplexStream<Message, Message>, ctx.signal)
              : (call as grpc.ServerWritableStream<Message, Message>).request;
            const output = await (handler as ServerStreamHandler | BidiStreamHandler)(
              input as Message & AsyncIterable<Message>,
              ctx,
            );
            if (isIterable(output)) {
              for await (const message of output) {
                if (call.cancelled) break;
                await ctx.send(message);
              }
            }
            return undefined;
          },
          (error) => {
            if (error) call.emit("error", error);
            else if (!call.cancelled) call.end();
          },
        );
    }
  }

  server.addService(definition, implementation);
  const health = new HealthService({
    "": options.initialStatus ?? "SERVING",
    [fullName]: options.initialStatus ?? "SERVING",
  });
  server.addService(healthServiceDefinition(), health.implementation());
  new ReflectionService({ ...bertforgePackageDefinition(), ...healthPackageDefinition() }, {
    services: [fullName, HEALTH_SERVICE],
  }).addToServer(server);

  const boundPort = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host.includes(":") ? `[${host}]` : host}:${port}`, credentials, (error, bound) => {
      if (error) {
        reject(
          new Error(`cannot listen on ${host}:${port} for ${fullName}: ${error.message}`, { cause: error }),
        );
      } else resolve(bound);
    });
  });
  const address = `${host}:${boundPort}`;

  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => (resolveFinished = resolve));
  let shutdownPromise: Promise<void> | undefined;
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGTERM", "SIGINT"];
  const onSignal = () => {
    void running.shutdown("signal");
  };

  const running: RunningServer = {
    service,
    address,
    port: boundPort,
    health,
    server,
    finished,
    stopping: stoppingController.signal,
    setServing(serving) {
      const status: ServingStatus = serving ? "SERVING" : "NOT_SERVING";
      health.setStatus(fullName, status);
      health.setStatus("", status);
    },
    shutdown(reason = "shutdown requested") {
      shutdownPromise ??= (async () => {
        log.info("draining", { reason, in_flight: activeCalls.size, grace_ms: graceMs });
        health.setAll("NOT_SERVING");
        stoppingController.abort(new Error(`the ${service} is shutting down`));
        health.endWatches();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            log.warn("grace period over: cutting calls still in flight", { in_flight: activeCalls.size });
            for (const call of activeCalls) call.abort(new Error("the server stopped"));
            server.forceShutdown();
            resolve();
          }, graceMs);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        if (options.handleSignals ?? true) {
          for (const signal of signals) {
            try {
              Deno.removeSignalListener(signal, onSignal);
            } catch {
              // already removed
            }
          }
        }
        try {
          await options.onShutdown?.();
        } catch (error) {
          log.error("shutdown hook failed", { error: (error as Error)?.message ?? String(error) });
        }
        await telemetry.shutdown().catch(() => {});
        log.info("stopped");
        resolveFinished();
      })();
      return shutdownPromise;
    },
  };

  if (options.handleSignals ?? true) {
    for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  }
  log.info("listening", { service: fullName, address, tls: Boolean(tlsPem), auth: Boolean(authToken) });
  return running;
}

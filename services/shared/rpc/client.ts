/**
 * client(): the one way to call a bertforge service. Calls return promises and async iterables; a failed
 * call rejects with the typed error of its status (`NotFound`, `Unavailable`, ... from
 * services/shared/errors.ts, the server's message as message, the exact code in `grpcCode`).
 *
 * Every call gets a deadline (unary: 60 s unless given; streams: none unless given), is retried on
 * UNAVAILABLE with exponential backoff and jitter while its deadline allows (unary calls, and server streams
 * that have not delivered a message yet), carries the bearer token when one is configured, and carries the
 * active trace context in its metadata.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { tracingClientInterceptor } from "../telemetry/otel.ts";
import { clientConstructor, fullServiceName, HEALTH_SERVICE, type ServiceName } from "./load.ts";
import { errorFromStatus, fromClientError, GrpcStatus } from "./status.ts";
import type { Message } from "./serve.ts";
import { readMessages } from "./_read.ts";

export interface RetryOptions {
  /** Attempts in all, the first included. @default 5 */
  maxAttempts?: number;
  /** @default 100 */
  initialBackoffMs?: number;
  /** @default 2000 */
  maxBackoffMs?: number;
  /** @default 2 */
  multiplier?: number;
}

export interface ClientOptions {
  /** Bearer token sent as `authorization: Bearer <token>`. @default BERTFORGE_AUTH_TOKEN when unset here */
  authToken?: string;
  /** TLS: true for the system roots, or PEM root certificates / a file of them. @default plaintext */
  tls?: boolean | { ca?: Uint8Array | string; caFile?: string; serverName?: string };
  /** Deadline of unary calls that set none; 0 means none. @default 60000 */
  defaultDeadlineMs?: number;
  retry?: RetryOptions;
  /** @default 64 MiB */
  maxMessageBytes?: number;
}

export interface CallOptions {
  /** Milliseconds from now; 0 means no deadline. */
  deadlineMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
  /** Extra metadata (the token and trace context are added for you). */
  metadata?: Record<string, string>;
  /** Overrides the client's retry policy for this call; `{maxAttempts: 1}` turns retries off. */
  retry?: RetryOptions;
}

const DEFAULT_RETRY: Required<RetryOptions> = {
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 2000,
  multiplier: 2,
};

function envToken(): string | undefined {
  try {
    return Deno.env.get("BERTFORGE_AUTH_TOKEN") || undefined;
  } catch {
    return undefined;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The name a TLS client checks the certificate against. Deno refuses an IP address as the TLS server name
 * (SNI), so a loopback IP becomes `localhost` unless a name is given (BERTFORGE_TLS_SERVER_NAME).
 */
export function tlsServerName(address: string, given?: string): string | undefined {
  let name = given;
  if (!name) {
    try {
      name = Deno.env.get("BERTFORGE_TLS_SERVER_NAME") || undefined;
    } catch {
      name = undefined;
    }
  }
  if (name) return name;
  const host = address.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  if (/^127\.\d+\.\d+\.\d+$/.test(host) || host === "::1") return "localhost";
  return undefined;
}

/** Backoff before attempt `attempt` (1-based retry count): exponential, capped, with full jitter above half. */
export function backoffMs(attempt: number, retry: Required<RetryOptions>): number {
  const ceiling = Math.min(retry.maxBackoffMs, retry.initialBackoffMs * retry.multiplier ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function validateRetry(retry: Required<RetryOptions>): Required<RetryOptions> {
  if (!Number.isInteger(retry.maxAttempts) || retry.maxAttempts < 1) {
    throw new RangeError(
      `Cannot retry as 'maxAttempts' must be a positive integer: current value is ${retry.maxAttempts}`,
    );
  }
  if (
    !(retry.initialBackoffMs >= 0) || !(retry.maxBackoffMs >= retry.initialBackoffMs) ||
    !(retry.multiplier >= 1)
  ) {
    throw new RangeError(
      `retry backoff must satisfy 0 <= initialBackoffMs <= maxBackoffMs and multiplier >= 1: current values are ` +
        `${retry.initialBackoffMs}, ${retry.maxBackoffMs}, ${retry.multiplier}`,
    );
  }
  return retry;
}

/** A connection to one service (bertforge or health) with promise-based calls. */
export class RpcClient {
  readonly service: string;
  readonly address: string;
  readonly raw: grpc.Client;
  readonly #token: string | undefined;
  readonly #defaultDeadlineMs: number;
  readonly #retry: Required<RetryOptions>;

  constructor(fullName: string, address: string, options: ClientOptions = {}) {
    this.service = fullName;
    this.address = address;
    this.#token = options.authToken ?? envToken();
    this.#defaultDeadlineMs = options.defaultDeadlineMs ?? 60_000;
    this.#retry = validateRetry({ ...DEFAULT_RETRY, ...options.retry });
    let credentials = grpc.credentials.createInsecure();
    if (options.tls) {
      const ca = typeof options.tls === "object"
        ? options.tls.ca ?? (options.tls.caFile ? Deno.readFileSync(options.tls.caFile) : undefined)
        : undefined;
      credentials = grpc.credentials.createSsl(ca === undefined ? null : Buffer.from(ca));
    }
    const maxMessageBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    const serverName = options.tls
      ? tlsServerName(address, typeof options.tls === "object" ? options.tls.serverName : undefined)
      : undefined;
    const Constructor = clientConstructor(fullName);
    this.raw = new Constructor(address, credentials, {
      "grpc.max_receive_message_length": maxMessageBytes,
      "grpc.max_send_message_length": maxMessageBytes,
      // Reconnect quickly: the default first backoff (1 s, growing to 120 s) outlasts our own retries.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2000,
      "grpc.keepalive_time_ms": 60_000,
      interceptors: [tracingClientInterceptor()],
      ...(serverName
        ? { "grpc.ssl_target_name_override": serverName, "grpc.default_authority": serverName }
        : {}),
    });
  }

  #metadata(extra?: Record<string, string>): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.#token) metadata.set("authorization", `Bearer ${this.#token}`);
    for (const [key, value] of Object.entries(extra ?? {})) metadata.set(key, value);
    return metadata;
  }

  #deadline(options: CallOptions | undefined, fallbackMs: number): Date | undefined {
    const ms = options?.deadlineMs ?? fallbackMs;
    return ms > 0 ? new Date(Date.now() + ms) : undefined;
  }

  #method(method: string): string {
    if (typeof (this.raw as unknown as Record<string, unknown>)[method] !== "function") {
      throw new TypeError(`${method} is not a method of ${this.service}`);
    }
    return method;
  }

  /** Calls a unary method. Retries UNAVAILABLE with backoff while attempts and the deadline allow. */
  async unary<Res = Message>(method: string, request: Message, options?: CallOptions): Promise<Res> {
    this.#method(method);
    const retry = validateRetry({ ...this.#retry, ...options?.retry });
    const deadline = this.#deadline(options, this.#defaultDeadlineMs);
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#unaryOnce<Res>(method, request, deadline, options);
      } catch (error) {
        const typed = fromClientError(error);
        const wait = backoffMs(attempt, retry);
        const retryable = (typed as { grpcCode?: number }).grpcCode === GrpcStatus.UNAVAILABLE &&
          attempt < retry.maxAttempts && !options?.signal?.aborted &&
          (deadline === undefined || Date.now() + wait < deadline.getTime());
        if (!retryable) throw typed;
        await sleep(wait, options?.signal);
      }
    }
  }

  #unaryOnce<Res>(
    method: string,
    request: Message,
    deadline: Date | undefined,
    options?: CallOptions,
  ): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      const callOptions: grpc.CallOptions = deadline ? { deadline } : {};
      // deno-lint-ignore no-explicit-any
      const fn = (this.raw as any)[method].bind(this.raw);
      const call: grpc.ClientUnaryCall = fn(
        request,
        this.#metadata(options?.metadata),
        callOptions,
        (error: grpc.ServiceError | null, response: Res) => {
          options?.signal?.removeEventListener("abort", onAbort);
          if (error) reject(error);
          else resolve(response);
        },
      );
      const onAbort = () => call.cancel();
      if (options?.signal?.aborted) call.cancel();
      else options?.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Calls a server-streaming method and yields its messages. UNAVAILABLE before the first message is
   * retried like a unary call; after it, the error is thrown (resume with what you got, e.g. a job watch's
   * last `seq`; see watchJob()). Breaking out of the loop cancels the call.
   */
  async *serverStream<Res = Message>(
    method: string,
    request: Message,
    options?: CallOptions,
  ): AsyncGenerator<Res> {
    this.#method(method);
    const retry = validateRetry({ ...this.#retry, ...options?.retry });
    const deadline = this.#deadline(options, 0);
    for (let attempt = 1;; attempt++) {
      const callOptions: grpc.CallOptions = deadline ? { deadline } : {};
      // deno-lint-ignore no-explicit-any
      const call: grpc.ClientReadableStream<Res> = (this.raw as any)[method](
        request,
        this.#metadata(options?.metadata),
        callOptions,
      );
      const onAbort = () => call.cancel();
      options?.signal?.addEventListener("abort", onAbort, { once: true });
      let received = 0;
      try {
        for await (const message of readMessages<Res>(call)) {
          received++;
          yield message;
        }
        return;
      } catch (error) {
        const typed = fromClientError(error);
        const wait = backoffMs(attempt, retry);
        const retryable = received === 0 &&
          (typed as { grpcCode?: number }).grpcCode === GrpcStatus.UNAVAILABLE &&
          attempt < retry.maxAttempts && !options?.signal?.aborted &&
          (deadline === undefined || Date.now() + wait < deadline.getTime());
        if (!retryable) throw typed;
        await sleep(wait, options?.signal);
      } finally {
        options?.signal?.removeEventListener("abort", onAbort);
        cancelQuietly(call); // a no-op when the call already ended; stops the server when the caller broke out
      }
    }
  }

  /**
   * Calls a client-streaming method: sends every message of `requests` (honouring back-pressure), then
   * resolves with the response. Not retried: a stream cannot be replayed.
   */
  clientStream<Res = Message>(
    method: string,
    requests: AsyncIterable<Message> | Iterable<Message>,
    options?: CallOptions,
  ): Promise<Res> {
    this.#method(method);
    const deadline = this.#deadline(options, 0);
    return new Promise<Res>((resolve, reject) => {
      let settled = false;
      const callOptions: grpc.CallOptions = deadline ? { deadline } : {};
      // deno-lint-ignore no-explicit-any
      const call: grpc.ClientWritableStream<Message> = (this.raw as any)[method](
        this.#metadata(options?.metadata),
        callOptions,
        (error: grpc.ServiceError | null, response: Res) => {
          settled = true;
          options?.signal?.removeEventListener("abort", onAbort);
          if (error) reject(fromClientError(error));
          else resolve(response);
        },
      );
      const onAbort = () => call.cancel();
      options?.signal?.addEventListener("abort", onAbort, { once: true });
      (async () => {
        for await (const message of requests) {
          if (settled) return; // the server already answered (an early error)
          if (!call.write(message)) {
            await new Promise<void>((resolveDrain) => {
              const done = () => {
                call.off("drain", done);
                call.off("status", done);
                resolveDrain();
              };
              call.on("drain", done);
              call.on("status", done);
            });
          }
        }
        call.end();
      })().catch((error) => {
        // The local source failed (a file read): stop the upload so nothing half-written is published.
        call.cancel();
        if (!settled) {
          settled = true;
          reject(error);
        }
      });
    });
  }

  /**
   * Calls a bidirectional method: sends `requests` in the background and yields the responses.
   * Not retried.
   */
  async *bidi<Res = Message>(
    method: string,
    requests: AsyncIterable<Message> | Iterable<Message>,
    options?: CallOptions,
  ): AsyncGenerator<Res> {
    this.#method(method);
    const deadline = this.#deadline(options, 0);
    const callOptions: grpc.CallOptions = deadline ? { deadline } : {};
    // deno-lint-ignore no-explicit-any
    const call: grpc.ClientDuplexStream<Message, Res> = (this.raw as any)[method](
      this.#metadata(options?.metadata),
      callOptions,
    );
    const onAbort = () => call.cancel();
    options?.signal?.addEventListener("abort", onAbort, { once: true });
    let sendError: unknown;
    const sending = (async () => {
      for await (const message of requests) {
        if (!call.write(message)) await new Promise((resolve) => call.once("drain", resolve));
      }
      call.end();
    })().catch((error) => {
      sendError = error;
      call.cancel();
    });
    try {
      for await (const message of readMessages<Res>(call)) yield message;
      await sending;
      if (sendError) throw sendError;
    } catch (error) {
      if (sendError) throw sendError;
      throw fromClientError(error);
    } finally {
      options?.signal?.removeEventListener("abort", onAbort);
      cancelQuietly(call);
    }
  }

  /** Resolves once connected, or rejects with Unavailable after `timeoutMs`. */
  waitForReady(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.raw.waitForReady(Date.now() + timeoutMs, (error) => {
        if (error) {
          reject(
            errorFromStatus(
              GrpcStatus.UNAVAILABLE,
              `${this.service} at ${this.address} is not reachable: ${error.message}`,
            ),
          );
        } else resolve();
      });
    });
  }

  close(): void {
    this.raw.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * A client of one bertforge service.
 * @example
 * ```ts
 * const tokenizer = client("TokenizerService", "127.0.0.1:50051");
 * const { encodings } = await tokenizer.unary("Tokenize", { vocab: "zh", inputs: [{ text: "你好" }] });
 * tokenizer.close();
 * ```
 */
export function client(service: ServiceName, address: string, options?: ClientOptions): RpcClient {
  return new RpcClient(fullServiceName(service), address, options);
}

/** A grpc.health.v1.Health client for a server. */
export function healthClient(address: string, options?: ClientOptions): RpcClient {
  return new RpcClient(HEALTH_SERVICE, address, options);
}

/**
 * Asks a server's health until `service` (full name, `""` for the whole server) is SERVING, or rejects
 * with Unavailable naming the last answer once `timeoutMs` has passed.
 */
export async function waitForServing(
  address: string,
  options: ClientOptions & { service?: string; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const health = healthClient(address, options);
  const until = Date.now() + (options.timeoutMs ?? 30_000);
  let last = "no answer";
  try {
    while (true) {
      try {
        const { status } = await health.unary<{ status: string }>(
          "Check",
          { service: options.service ?? "" },
          {
            deadlineMs: 2000,
            retry: { maxAttempts: 1 },
            ...(options.signal ? { signal: options.signal } : {}),
          },
        );
        if (status === "SERVING") return;
        last = status;
      } catch (error) {
        if (options.signal?.aborted) throw error;
        last = (error as Error).message;
      }
      if (Date.now() > until) {
        throw errorFromStatus(
          GrpcStatus.UNAVAILABLE,
          `${options.service || "server"} at ${address} did not become SERVING within ${
            options.timeoutMs ?? 30_000
          } ms: ${last}`,
        );
      }
      await sleep(100, options.signal);
    }
  } finally {
    health.close();
  }
}

/**
 * Cancels a call whose messages nobody reads any more. grpc-js answers a cancel with an `error` event
 * (CANCELLED); once the reader has let go of the stream no listener is left, and an unheard `error` event is
 * thrown as an uncaught exception that kills the process. The caller chose to stop, so that error is expected.
 */
function cancelQuietly(call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>) {
  call.on("error", () => {});
  call.cancel();
}

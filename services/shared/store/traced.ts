/**
 * Store operations as CLIENT spans (`store.put`, `store.get`, `store.list`, ...), one wrapper that
 * `openStore()` puts around every store, so no call site has to remember it.
 *
 * A span is made only inside a trace (an RPC, a job): background polls (the inference registry's reload
 * listing, a watcher waiting for events) would otherwise each start a trace of their own and bury the
 * pipeline's traces. A missing object is an answer, not a failure (callers probe with `get`), so NotFound
 * is recorded as `bertforge.store.found = false` and the span stays OK.
 *
 * @module
 */
import { type Attributes, type Span, SpanStatusCode } from "@opentelemetry/api";
import { NotFound } from "../errors.ts";
import { activeSpanContext, SpanKind, startSpan } from "../telemetry/otel.ts";
import type { ListOptions, ObjectInfo, ObjectStore, PutData, PutOptions, RangeOptions } from "./store.ts";

/** True when `store` is already wrapped (wrapping twice would double every span). */
const TRACED = Symbol("traced store");

export function tracedStore(store: ObjectStore): ObjectStore {
  if ((store as { [TRACED]?: boolean })[TRACED]) return store;
  return new TracedStore(store);
}

class TracedStore implements ObjectStore {
  readonly [TRACED] = true;
  readonly #inner: ObjectStore;

  constructor(inner: ObjectStore) {
    this.#inner = inner;
  }

  get kind(): string {
    return this.#inner.kind;
  }

  get location(): string {
    return this.#inner.location;
  }

  /** Runs `fn` in a `store.<op>` span when a trace is active, else plainly. */
  async #op<T>(
    op: string,
    attributes: Attributes,
    fn: () => Promise<T>,
    after?: (span: Span, value: T) => void,
  ): Promise<T> {
    if (!activeSpanContext()) return await fn();
    const span = startSpan(`store.${op}`, { "bertforge.store.kind": this.#inner.kind, ...attributes }, {
      kind: SpanKind.CLIENT,
    });
    try {
      const value = await fn();
      after?.(span, value);
      return value;
    } catch (error) {
      if (error instanceof NotFound) {
        span.setAttribute("bertforge.store.found", false);
      } else {
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
      }
      throw error;
    } finally {
      span.end();
    }
  }

  put(key: string, data: PutData, options?: PutOptions): Promise<ObjectInfo> {
    return this.#op("put", { "bertforge.store.key": key }, () => this.#inner.put(key, data, options), sized);
  }

  putJson(key: string, value: unknown, options?: PutOptions): Promise<ObjectInfo> {
    return this.#op(
      "put",
      { "bertforge.store.key": key },
      () => this.#inner.putJson(key, value, options),
      sized,
    );
  }

  get(key: string): Promise<Uint8Array> {
    return this.#op(
      "get",
      { "bertforge.store.key": key },
      () => this.#inner.get(key),
      (span, bytes) => span.setAttribute("bertforge.store.bytes", bytes.length),
    );
  }

  getText(key: string): Promise<string> {
    return this.#op("get", { "bertforge.store.key": key }, () => this.#inner.getText(key));
  }

  getJson<T = unknown>(key: string): Promise<T> {
    return this.#op("get", { "bertforge.store.key": key }, () => this.#inner.getJson<T>(key));
  }

  /** The span covers opening the stream; reading it is the caller's time. */
  getStream(key: string, options?: RangeOptions): Promise<ReadableStream<Uint8Array>> {
    const attributes: Attributes = { "bertforge.store.key": key };
    if (options?.offset !== undefined) attributes["bertforge.store.offset"] = options.offset;
    if (options?.length !== undefined) attributes["bertforge.store.length"] = options.length;
    return this.#op("get_stream", attributes, () => this.#inner.getStream(key, options));
  }

  stat(key: string): Promise<ObjectInfo | null> {
    return this.#op(
      "stat",
      { "bertforge.store.key": key },
      () => this.#inner.stat(key),
      (span, info) => span.setAttribute("bertforge.store.found", info !== null),
    );
  }

  exists(key: string): Promise<boolean> {
    return this.#op(
      "stat",
      { "bertforge.store.key": key },
      () => this.#inner.exists(key),
      (span, found) => span.setAttribute("bertforge.store.found", found),
    );
  }

  /** One span for the whole listing, ended when the caller stops iterating; it counts the entries. */
  async *list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo> {
    if (!activeSpanContext()) {
      yield* this.#inner.list(prefix, options);
      return;
    }
    const span = startSpan("store.list", {
      "bertforge.store.kind": this.#inner.kind,
      "bertforge.store.prefix": prefix,
      "bertforge.store.recursive": options?.recursive ?? false,
    }, { kind: SpanKind.CLIENT });
    let entries = 0;
    try {
      for await (const info of this.#inner.list(prefix, options)) {
        entries++;
        yield info;
      }
    } catch (error) {
      span.recordException(error as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
      throw error;
    } finally {
      span.setAttribute("bertforge.store.entries", entries);
      span.end();
    }
  }

  delete(key: string): Promise<void> {
    return this.#op("delete", { "bertforge.store.key": key }, () => this.#inner.delete(key));
  }

  deletePrefix(prefix: string): Promise<number> {
    return this.#op(
      "delete_prefix",
      { "bertforge.store.prefix": prefix },
      () => this.#inner.deletePrefix(prefix),
      (span, count) => span.setAttribute("bertforge.store.entries", count),
    );
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

function sized(span: Span, info: ObjectInfo): void {
  span.setAttribute("bertforge.store.bytes", info.size);
}

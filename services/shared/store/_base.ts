/**
 * What every store derives from the primitives (put/get/stat/list/delete): JSON and text helpers,
 * `exists`, `deletePrefix`, and the data plumbing both backends share. Private to the store folder.
 */
import { FailedPrecondition, InvalidArgument, Unavailable } from "../errors.ts";
import type { ListOptions, ObjectInfo, ObjectStore, PutData, PutOptions, RangeOptions } from "./store.ts";
import { validatePrefix } from "./store.ts";

export abstract class BaseStore implements ObjectStore {
  abstract readonly kind: string;
  abstract readonly location: string;
  abstract put(key: string, data: PutData, options?: PutOptions): Promise<ObjectInfo>;
  abstract get(key: string): Promise<Uint8Array>;
  abstract getStream(key: string, options?: RangeOptions): Promise<ReadableStream<Uint8Array>>;
  abstract stat(key: string): Promise<ObjectInfo | null>;
  abstract list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>;
  abstract delete(key: string): Promise<void>;
  abstract close(): Promise<void>;

  putJson(key: string, value: unknown, options: PutOptions = {}): Promise<ObjectInfo> {
    const text = JSON.stringify(value, null, 2);
    if (text === undefined) throw new InvalidArgument(`value for ${key} cannot be written as JSON`);
    return this.put(key, text + "\n", { contentType: "application/json", ...options });
  }

  async getText(key: string): Promise<string> {
    const bytes = await this.get(key);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new FailedPrecondition(`object ${key} is not valid UTF-8 text`);
    }
  }

  async getJson<T = unknown>(key: string): Promise<T> {
    const text = await this.getText(key);
    try {
      return JSON.parse(text) as T;
    } catch (error) {
      throw new FailedPrecondition(`object ${key} is not valid JSON: ${(error as Error).message}`);
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.stat(key)) !== null;
  }

  async deletePrefix(prefix: string): Promise<number> {
    validatePrefix(prefix);
    if (!prefix.endsWith("/")) {
      // A prefix like "models/bert" would also delete "models/bert-large/": refuse the ambiguity.
      throw new InvalidArgument(`prefix for deletePrefix must end in '/': ${JSON.stringify(prefix)}`);
    }
    const keys: string[] = [];
    for await (const info of this.list(prefix, { recursive: true })) keys.push(info.key);
    let deleted = 0;
    for (const key of keys) {
      try {
        await this.delete(key);
        deleted++;
      } catch (error) {
        // Someone else deleted it in between: the goal (gone) is reached.
        if ((error as { code?: string }).code !== "NOT_FOUND") throw error;
      }
    }
    return deleted;
  }
}

/** How a store retries a request that failed for a transient reason. */
export interface StoreRetry {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** First backoff delay, doubled after each failed attempt (with jitter). */
  retryBaseMs: number;
}

/**
 * Runs one store request, retrying the failures `isTransient` accepts with exponential backoff and jitter;
 * after the last attempt the caller gets an `Unavailable` naming the store, the request and the cause.
 * Anything else (NotFound, InvalidArgument, FailedPrecondition) is thrown at once: retrying cannot help.
 */
export async function withRetry<T>(
  location: string,
  what: string,
  request: () => Promise<T>,
  isTransient: (error: unknown) => boolean,
  retry: StoreRetry,
): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await request();
    } catch (error) {
      if (!isTransient(error)) throw error;
      if (attempt >= retry.maxAttempts) {
        throw new Unavailable(
          `object store ${location} unavailable (${what}, ${attempt} attempts): ${describeError(error)}`,
          { cause: error },
        );
      }
      const delay = retry.retryBaseMs * 2 ** (attempt - 1) * (0.5 + Math.random());
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/** `CODE: message` of an I/O or S3 error. */
export function describeError(error: unknown): string {
  const e = error as { code?: string; message?: string };
  return e?.code ? `${e.code}: ${e.message}` : String(e?.message ?? error);
}

/** The chunks of what `put` was given, as bytes. */
export async function* chunksOf(data: PutData): AsyncIterable<Uint8Array> {
  if (typeof data === "string") {
    yield new TextEncoder().encode(data);
  } else if (data instanceof Uint8Array) {
    yield data;
  } else if (data instanceof ReadableStream) {
    for await (const chunk of data) {
      if (!(chunk instanceof Uint8Array)) {
        throw new InvalidArgument(`put data stream must yield Uint8Array chunks, got ${typeof chunk}`);
      }
      yield chunk;
    }
  } else {
    throw new InvalidArgument("put data must be a Uint8Array, a string or a ReadableStream<Uint8Array>");
  }
}

/** Checks a byte range against an object's size; returns the concrete [start, end) it names. */
export function resolveRange(key: string, size: number, options: RangeOptions = {}): [number, number] {
  const offset = options.offset ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new InvalidArgument(`offset must be a non-negative integer: got ${offset}`);
  }
  if (offset > size) {
    throw new InvalidArgument(`offset ${offset} is past the end of ${key} (${size} bytes)`);
  }
  const length = options.length ?? size - offset;
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new InvalidArgument(`length must be a non-negative integer: got ${length}`);
  }
  return [offset, Math.min(size, offset + length)];
}

/**
 * Orders keys by Unicode code point, which is the UTF-8 byte order S3 lists in (plain `<` on
 * JavaScript strings compares UTF-16 units and puts U+E000..U+FFFF after astral characters).
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs !== ys) return xs ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

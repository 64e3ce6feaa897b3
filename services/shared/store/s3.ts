/**
 * The S3 store, through the `minio` client: MinIO in deployments, any S3 elsewhere, `s3rver` in tests.
 *
 * - Atomicity comes from S3 itself: a PUT or a completed multipart upload becomes visible whole, and
 *   artifacts of several objects are published with a manifest written last (`publish.ts`).
 * - `put` of a stream buffers one part at a time (default 8 MiB): up to one part it is a single PUT
 *   (with the SHA-256 recorded as `x-amz-meta-sha256`), beyond that a multipart upload, aborted if
 *   the source stream fails, so nothing half-written ever appears under the key.
 * - Every request is retried with exponential backoff on transient failures (connection refused or
 *   reset, timeouts, 5xx, SlowDown); after the last attempt the error is an `Unavailable`.
 * - The bucket is created on first use when it does not exist.
 *
 * @module
 */
import * as Minio from "minio";
import { Buffer } from "node:buffer";
import type { Readable } from "node:stream";
import { InvalidArgument, NotFound } from "../errors.ts";
import { BaseStore, chunksOf, compareKeys, resolveRange, withRetry } from "./_base.ts";
import { Sha256 } from "./hash.ts";
import type { ListOptions, ObjectInfo, PutData, PutOptions, RangeOptions } from "./store.ts";
import { validateKey, validatePrefix } from "./store.ts";

export interface S3Settings {
  /** Endpoint, e.g. `http://minio:9000` or `https://s3.eu-west-1.amazonaws.com`. */
  url: string;
  /** @default "bertforge" */
  bucket?: string;
  accessKey: string;
  secretKey: string;
  /** @default "us-east-1" */
  region?: string;
  /** Bytes buffered per upload part; S3 needs at least 5 MiB. @default 8 MiB */
  partSize?: number;
  /** Attempts per request before giving up with `Unavailable`. @default 5 */
  maxAttempts?: number;
  /** First backoff delay, doubled after each failed attempt (with jitter). @default 200 */
  retryBaseMs?: number;
}

const MIN_PART_SIZE = 5 * 1024 * 1024;
const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
const NOT_FOUND_CODES = new Set(["NoSuchKey", "NotFound", "NoSuchObject"]);
const TRANSIENT_NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ECONNABORTED",
  "UND_ERR_SOCKET",
]);
const TRANSIENT_S3_CODES = new Set([
  "InternalError",
  "ServiceUnavailable",
  "SlowDown",
  "RequestTimeout",
  "RequestTimeTooSkewed",
]);

export class S3Store extends BaseStore {
  readonly kind = "s3";
  readonly location: string;
  readonly bucket: string;
  readonly #client: Minio.Client;
  readonly #region: string;
  readonly #partSize: number;
  readonly #maxAttempts: number;
  readonly #retryBaseMs: number;
  #bucketReady: Promise<void> | null = null;

  constructor(settings: S3Settings) {
    super();
    let url: URL;
    try {
      url = new URL(settings.url);
    } catch {
      throw new InvalidArgument(`s3.url must be a URL like http://minio:9000: got ${settings.url}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new InvalidArgument(`s3.url must start with http:// or https://: got ${settings.url}`);
    }
    this.bucket = settings.bucket ?? "bertforge";
    this.#region = settings.region ?? "us-east-1";
    this.#partSize = settings.partSize ?? DEFAULT_PART_SIZE;
    if (this.#partSize < MIN_PART_SIZE) {
      throw new InvalidArgument(`s3.partSize must be at least ${MIN_PART_SIZE} bytes: got ${this.#partSize}`);
    }
    this.#maxAttempts = settings.maxAttempts ?? 5;
    this.#retryBaseMs = settings.retryBaseMs ?? 200;
    const useSSL = url.protocol === "https:";
    this.#client = new Minio.Client({
      endPoint: url.hostname.replace(/^\[|\]$/g, ""),
      port: url.port ? Number(url.port) : (useSSL ? 443 : 80),
      useSSL,
      accessKey: settings.accessKey,
      secretKey: settings.secretKey,
      region: this.#region,
      pathStyle: true,
    });
    this.location = `s3://${this.bucket}@${url.origin}`;
  }

  /** Creates the bucket once per store when it is missing (another process may race us to it). */
  #ensureBucket(): Promise<void> {
    this.#bucketReady ??= this.#retry("bucket", async () => {
      if (await this.#client.bucketExists(this.bucket)) return;
      try {
        await this.#client.makeBucket(this.bucket, this.#region);
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code !== "BucketAlreadyOwnedByYou" && code !== "BucketAlreadyExists") throw error;
      }
    }).catch((error) => {
      this.#bucketReady = null; // let the next call try again
      throw error;
    });
    return this.#bucketReady;
  }

  /** Runs one request, retrying transient failures with exponential backoff and jitter. */
  #retry<T>(what: string, request: () => Promise<T>): Promise<T> {
    return withRetry(this.location, what, request, isTransient, {
      maxAttempts: this.#maxAttempts,
      retryBaseMs: this.#retryBaseMs,
    });
  }

  async put(key: string, data: PutData, options: PutOptions = {}): Promise<ObjectInfo> {
    validateKey(key);
    await this.#ensureBucket();
    const hasher = new Sha256();
    const contentType = options.contentType ?? "application/octet-stream";
    const part = new Uint8Array(this.#partSize);
    let filled = 0;
    let upload: { id: string; etags: { part: number; etag: string }[] } | null = null;

    const sendPart = async (bytes: Uint8Array) => {
      if (upload === null) {
        const id = await this.#retry(
          `start upload of ${key}`,
          () => this.#client.initiateNewMultipartUpload(this.bucket, key, { "Content-Type": contentType }),
        );
        upload = { id, etags: [] };
      }
      const { id, etags } = upload;
      const partNumber = etags.length + 1;
      const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const result = await this.#retry(`upload part ${partNumber} of ${key}`, () =>
        this.#client.uploadPart({
          bucketName: this.bucket,
          objectName: key,
          uploadID: id,
          partNumber,
          headers: { "Content-Length": body.byteLength },
        }, body));
      etags.push({ part: partNumber, etag: result.etag });
    };

    try {
      for await (let chunk of chunksOf(data)) {
        hasher.update(chunk);
        while (chunk.byteLength > 0) {
          const take = Math.min(chunk.byteLength, part.byteLength - filled);
          part.set(chunk.subarray(0, take), filled);
          filled += take;
          chunk = chunk.subarray(take);
          if (filled === part.byteLength) {
            // One part buffer for the whole upload: sendPart has finished with it (retries included) when
            // it returns, and a fresh buffer per part would leave the garbage collector a part per part.
            await sendPart(part);
            filled = 0;
          }
        }
      }
      const sha256 = hasher.hex();
      if (upload === null) {
        const body = Buffer.from(part.buffer, 0, filled);
        await this.#retry(`put ${key}`, () =>
          this.#client.putObject(this.bucket, key, body, filled, {
            "Content-Type": contentType,
            sha256,
          }));
      } else {
        if (filled > 0) await sendPart(part.subarray(0, filled));
        const { id, etags } = upload as { id: string; etags: { part: number; etag: string }[] };
        await this.#retry(
          `complete upload of ${key}`,
          () => this.#client.completeMultipartUpload(this.bucket, key, id, etags),
        );
      }
      return { key, size: hasher.bytes, sha256, contentType, lastModified: new Date() };
    } catch (error) {
      if (upload !== null) {
        const { id } = upload as { id: string };
        await this.#client.abortMultipartUpload(this.bucket, key, id).catch(() => {});
      }
      throw error;
    }
  }

  async get(key: string): Promise<Uint8Array> {
    validateKey(key);
    await this.#ensureBucket();
    return await this.#retry(`get ${key}`, async () => {
      try {
        const stream = await this.#client.getObject(this.bucket, key);
        const chunks: Uint8Array[] = [];
        let size = 0;
        for await (const chunk of stream as AsyncIterable<Uint8Array>) {
          chunks.push(chunk);
          size += chunk.byteLength;
        }
        const out = new Uint8Array(size);
        let at = 0;
        for (const chunk of chunks) {
          out.set(chunk, at);
          at += chunk.byteLength;
        }
        return out;
      } catch (error) {
        throw notFoundOr(key, error);
      }
    });
  }

  async getStream(key: string, options: RangeOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const info = await this.stat(key);
    if (info === null) throw new NotFound(`object ${key} not found`);
    const [start, end] = resolveRange(key, info.size, options);
    // minio reads "length 0" as "to the end", so an empty range never reaches it.
    if (end === start) return new ReadableStream({ start: (controller) => controller.close() });
    const source: Readable = await this.#retry(`get ${key}`, async () => {
      try {
        return await this.#client.getPartialObject(this.bucket, key, start, end - start);
      } catch (error) {
        throw notFoundOr(key, error);
      }
    });
    const iterator = (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { value, done } = await iterator.next();
          if (done) controller.close();
          else controller.enqueue(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
        } catch (error) {
          controller.error(error);
        }
      },
      cancel() {
        source.destroy();
      },
    });
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    validateKey(key);
    await this.#ensureBucket();
    return await this.#retry(`stat ${key}`, async () => {
      try {
        const info = await this.#client.statObject(this.bucket, key);
        const meta = info.metaData as Record<string, string | undefined>;
        return {
          key,
          size: info.size,
          lastModified: info.lastModified,
          ...(meta.sha256 ? { sha256: meta.sha256 } : {}),
          ...(meta["content-type"] ? { contentType: meta["content-type"] } : {}),
        };
      } catch (error) {
        if (NOT_FOUND_CODES.has((error as { code?: string }).code ?? "")) return null;
        throw error;
      }
    });
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
    await this.#ensureBucket();
    const delimiter = options.recursive ? "" : "/";
    // S3 pages objects and common prefixes separately; gather and sort so both interleave by key.
    const found: ObjectInfo[] = [];
    let token = "";
    do {
      const page = await this.#retry(
        `list ${prefix}`,
        () => this.#client.listObjectsV2Query(this.bucket, prefix, token, delimiter, 1000, ""),
      );
      for (const item of page.objects) {
        if (item.prefix !== undefined) {
          found.push({ key: item.prefix, size: 0, isPrefix: true });
        } else if (item.name !== undefined) {
          found.push({ key: item.name, size: item.size, lastModified: item.lastModified });
        }
      }
      token = page.isTruncated ? page.nextContinuationToken : "";
    } while (token);
    found.sort((a, b) => compareKeys(a.key, b.key));
    yield* found;
  }

  async delete(key: string): Promise<void> {
    // S3 deletes of missing keys succeed silently; the interface promises NotFound.
    if ((await this.stat(key)) === null) throw new NotFound(`object ${key} not found`);
    await this.#retry(`delete ${key}`, () => this.#client.removeObject(this.bucket, key));
  }

  override async deletePrefix(prefix: string): Promise<number> {
    validatePrefix(prefix);
    if (!prefix.endsWith("/")) {
      throw new InvalidArgument(`prefix for deletePrefix must end in '/': ${JSON.stringify(prefix)}`);
    }
    const keys: string[] = [];
    for await (const info of this.list(prefix, { recursive: true })) keys.push(info.key);
    // One multi-object delete per 1000 keys (the S3 limit) instead of one request per key.
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      await this.#retry(`delete ${prefix}`, () => this.#client.removeObjects(this.bucket, batch));
    }
    return keys.length;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function notFoundOr(key: string, error: unknown): unknown {
  if (NOT_FOUND_CODES.has((error as { code?: string }).code ?? "")) {
    return new NotFound(`object ${key} not found`);
  }
  return error;
}

function isTransient(error: unknown): boolean {
  const e = error as { code?: string; cause?: { code?: string }; name?: string };
  const code = e?.code ?? e?.cause?.code ?? "";
  if (TRANSIENT_NETWORK_CODES.has(code) || TRANSIENT_S3_CODES.has(code)) return true;
  // Deno surfaces some socket failures as its own error classes rather than Node codes.
  return error instanceof Deno.errors.ConnectionRefused || error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.TimedOut || error instanceof Deno.errors.BrokenPipe;
}

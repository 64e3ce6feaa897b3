/**
 * The object store interface: one bucket of keys such as `corpora/<name>/train.txt`, with two
 * implementations (a local folder in `local.ts`, S3 in `s3.ts`). Prefixes follow DESIGN.md Storage:
 * `corpora/`, `vocabs/`, `shards/`, `jobs/<id>/`, `models/<name>/<version>/`.
 *
 * Guarantees every implementation gives (the conformance suite in `store_conformance.ts` checks them):
 * - `put` is atomic: a reader sees the old object, or the new one whole, never a partial one.
 * - `put` of a stream never holds the whole object in memory; neither does `getStream`.
 * - `list` yields keys in ascending byte order (what S3 returns), so listings are deterministic.
 * - A missing object is a `NotFound`, a malformed key an `InvalidArgument` (services/shared/errors.ts).
 *
 * Artifacts made of several objects are published with a manifest written last (`publish.ts`).
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";

/** What the store knows about one object. */
export interface ObjectInfo {
  /** Full key, e.g. `vocabs/zh/vocab.txt`. For a prefix entry of a non-recursive listing it ends in `/`. */
  key: string;
  /** Size in bytes (0 for a prefix entry). */
  size: number;
  /**
   * Lower-case hex SHA-256 of the content. Always set by `put`; `stat`/`list` set it only where the
   * backend kept it (manifests are the place to look up an artifact part's hash).
   */
  sha256?: string;
  contentType?: string;
  lastModified?: Date;
  /** True for the "directory" entries of a non-recursive listing. */
  isPrefix?: boolean;
}

export interface PutOptions {
  /** MIME type recorded with the object where the backend can keep it. */
  contentType?: string;
}

export interface RangeOptions {
  /** First byte to read. @default 0 */
  offset?: number;
  /** How many bytes to read at most; a range past the end is cut at the end. @default to the end */
  length?: number;
}

export interface ListOptions {
  /**
   * True: every key under the prefix. False: only the level right below the prefix's last `/`, with
   * deeper levels collapsed into one `isPrefix` entry each (like `ls`, or S3 with delimiter `/`).
   * @default false
   */
  recursive?: boolean;
}

/** What `put` accepts: bytes, text (written as UTF-8), or a stream that is consumed once. */
export type PutData = Uint8Array | string | ReadableStream<Uint8Array>;

/** The store every service talks to. Keys are validated with {@linkcode validateKey}. */
export interface ObjectStore {
  /** `"local"` or `"s3"`. */
  readonly kind: string;
  /** Where the data lives, for logs: a folder path or `s3://bucket@endpoint`. */
  readonly location: string;

  put(key: string, data: PutData, options?: PutOptions): Promise<ObjectInfo>;
  putJson(key: string, value: unknown, options?: PutOptions): Promise<ObjectInfo>;
  /** The whole object in memory: for small objects only; use `getStream` for large ones. */
  get(key: string): Promise<Uint8Array>;
  getText(key: string): Promise<string>;
  getJson<T = unknown>(key: string): Promise<T>;
  /**
   * A stream of the object's bytes (or of a byte range). Throws `NotFound` before any byte is read
   * when the key does not exist. Cancelling the stream releases the file or connection.
   */
  getStream(key: string, options?: RangeOptions): Promise<ReadableStream<Uint8Array>>;
  /** The object's info, or `null` when it does not exist. */
  stat(key: string): Promise<ObjectInfo | null>;
  exists(key: string): Promise<boolean>;
  /** Objects whose key starts with `prefix` (`""` for all), in ascending key order. */
  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>;
  /** Deletes one object; `NotFound` when it does not exist. */
  delete(key: string): Promise<void>;
  /** Deletes every object under `prefix` (which must end in `/`); returns how many were deleted. */
  deletePrefix(prefix: string): Promise<number>;
  /** Releases what the store holds (sockets); the store is unusable afterwards. */
  close(): Promise<void>;
}

/** Longest key accepted: S3 allows 1024 bytes of UTF-8. */
export const MAX_KEY_BYTES = 1024;

/**
 * Marker the local store puts in the names of its temporary files; keys may not contain it, so a
 * temporary file can never be mistaken for an object.
 */
export const TEMP_MARKER = ".bf-partial-";

// deno-lint-ignore no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

/**
 * The one place keys are checked. A key is `/`-separated segments, none empty, none `.` or `..`, no
 * leading `/` (keys are relative to the bucket), no backslash (it would be a separator on Windows),
 * no control characters, at most {@linkcode MAX_KEY_BYTES} bytes.
 *
 * @param field the name of the field the key came from, for the error message
 * @throws InvalidArgument naming the field and the problem
 */
export function validateKey(key: string, field = "key"): string {
  if (typeof key !== "string" || key.length === 0) {
    throw new InvalidArgument(`${field} must be a non-empty string: got ${JSON.stringify(key)}`);
  }
  checkCommon(key, field);
  if (key.endsWith("/")) {
    throw new InvalidArgument(`${field} must not end in '/' (that names a prefix, not an object): ${key}`);
  }
  checkSegments(key.split("/"), key, field);
  return key;
}

/**
 * Checks a listing/deletion prefix: `""` (everything), or something that would be a valid key if
 * a final `/` were removed (a prefix may end in `/` or in part of a segment, like `corpora/ab`).
 */
export function validatePrefix(prefix: string, field = "prefix"): string {
  if (typeof prefix !== "string") {
    throw new InvalidArgument(`${field} must be a string: got ${typeof prefix}`);
  }
  if (prefix === "") return prefix;
  checkCommon(prefix, field);
  const segments = prefix.split("/");
  if (prefix.endsWith("/")) segments.pop();
  checkSegments(segments, prefix, field);
  return prefix;
}

function checkCommon(key: string, field: string): void {
  if (key.startsWith("/")) {
    throw new InvalidArgument(`${field} must be relative (no leading '/'): ${JSON.stringify(key)}`);
  }
  if (CONTROL_CHARS.test(key)) {
    throw new InvalidArgument(`${field} must not contain control characters: ${JSON.stringify(key)}`);
  }
  if (key.includes("\\")) {
    throw new InvalidArgument(`${field} must use '/' as separator, not '\\': ${JSON.stringify(key)}`);
  }
  if (key.includes(TEMP_MARKER)) {
    throw new InvalidArgument(`${field} must not contain the reserved '${TEMP_MARKER}': ${key}`);
  }
  const bytes = new TextEncoder().encode(key).length;
  if (bytes > MAX_KEY_BYTES) {
    throw new InvalidArgument(`${field} is ${bytes} bytes long, the limit is ${MAX_KEY_BYTES}`);
  }
}

function checkSegments(segments: string[], key: string, field: string): void {
  for (const segment of segments) {
    if (segment === "") {
      throw new InvalidArgument(`${field} must not contain an empty segment ('//'): ${JSON.stringify(key)}`);
    }
    if (segment === "." || segment === "..") {
      throw new InvalidArgument(`${field} must not contain a '${segment}' segment: ${JSON.stringify(key)}`);
    }
  }
}

/** Joins key parts with `/`, then validates the result, e.g. `joinKey("vocabs", name, "vocab.txt")`. */
export function joinKey(...parts: string[]): string {
  return validateKey(parts.map((p) => p.replace(/^\/+|\/+$/g, "")).filter((p) => p !== "").join("/"));
}

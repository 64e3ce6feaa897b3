/**
 * Content hashing, in one place for the whole project: lower-case hex SHA-256 of bytes, text, streams
 * and files. Incremental (node:crypto, native speed), so a large object is hashed while it streams.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";

/** An incremental SHA-256: `update` as bytes arrive, `hex` once at the end. */
export class Sha256 {
  #hash: Hash = createHash("sha256");
  #bytes = 0;

  update(chunk: Uint8Array | string): this {
    const bytes = typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk;
    this.#hash.update(bytes);
    this.#bytes += bytes.byteLength;
    return this;
  }

  /** Bytes seen so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The digest as lower-case hex; the hasher cannot be updated afterwards. */
  hex(): string {
    return this.#hash.digest("hex");
  }
}

/** SHA-256 of bytes or of text (as UTF-8), or of everything a stream/iterable yields, as lower-case hex. */
export async function sha256(
  data: Uint8Array | string | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
): Promise<string> {
  const hasher = new Sha256();
  if (typeof data === "string" || data instanceof Uint8Array) return hasher.update(data).hex();
  for await (const chunk of data as AsyncIterable<Uint8Array>) hasher.update(chunk);
  return hasher.hex();
}

/** SHA-256 and size of a local file, read as a stream. */
export async function hashFile(path: string | URL): Promise<{ sha256: string; size: number }> {
  // The readable closes the file when it ends or fails.
  const file = await Deno.open(path, { read: true });
  const hasher = new Sha256();
  for await (const chunk of file.readable) hasher.update(chunk);
  return { sha256: hasher.hex(), size: hasher.bytes };
}

/**
 * Subset of jsr:@std/crypto (see README.md): `crypto.subtle.digest` that also accepts (async) iterables of
 * chunks, so large objects hash as they stream.
 */
import { createHash } from "node:crypto";

type Chunks = BufferSource | AsyncIterable<BufferSource> | Iterable<BufferSource>;
const NODE_NAMES: Record<string, string> = {
  "SHA-256": "sha256",
  "SHA-1": "sha1",
  "SHA-512": "sha512",
  "MD5": "md5",
};

function toBytes(chunk: BufferSource): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return new Uint8Array(chunk);
}

export const crypto = {
  ...globalThis.crypto,
  getRandomValues: globalThis.crypto.getRandomValues.bind(globalThis.crypto),
  randomUUID: globalThis.crypto.randomUUID.bind(globalThis.crypto),
  subtle: {
    async digest(algorithm: string | { name: string }, data: Chunks): Promise<ArrayBuffer> {
      const name = typeof algorithm === "string" ? algorithm : algorithm.name;
      const nodeName = NODE_NAMES[name.toUpperCase()];
      if (!nodeName) throw new TypeError(`Unsupported digest algorithm '${name}'`);
      const hash = createHash(nodeName);
      if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) hash.update(toBytes(data));
      else if (Symbol.asyncIterator in (data as object)) {
        for await (const c of data as AsyncIterable<BufferSource>) {
          hash.update(toBytes(c));
        }
      } else for (const c of data as Iterable<BufferSource>) hash.update(toBytes(c));
      const out = hash.digest();
      return out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength) as ArrayBuffer;
    },
  },
};

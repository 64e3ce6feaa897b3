/**
 * The embedded store: a local folder, one file per key (`<root>/vocabs/zh/vocab.txt`).
 *
 * A write goes to a temporary file beside its target (same directory, so the same filesystem), is
 * fsynced, then renamed over the target: rename is atomic on POSIX, so a reader opens either the old
 * file or the new one, whole. Temporary files carry {@linkcode TEMP_MARKER} in their name; listings
 * skip them and keys may not contain it. Content type and hash are not kept on disk (manifests hold
 * the hashes of artifact parts).
 *
 * A write that fails for a reason that may pass (the folder read-only for a moment, the disk full, EIO) is
 * retried with backoff, then reported as `Unavailable`; NotFound and conflicts are reported at once.
 * Temporary files left by a process killed mid-write are swept on the first write, once they are older
 * than any write still in flight could be (`partialMaxAgeMs`): the services of a fleet share one folder.
 *
 * A folder cannot hold both a file `a` and a folder `a/`, so unlike S3 the keys `a` and `a/b` cannot
 * coexist here; writing one while the other exists is a `FailedPrecondition`.
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { FailedPrecondition, NotFound } from "../errors.ts";
import { BaseStore, chunksOf, compareKeys, resolveRange, type StoreRetry, withRetry } from "./_base.ts";
import { Sha256 } from "./hash.ts";
import type { ListOptions, ObjectInfo, PutData, PutOptions, RangeOptions } from "./store.ts";
import { TEMP_MARKER, validateKey, validatePrefix } from "./store.ts";

const READ_CHUNK_BYTES = 256 * 1024;

export interface LocalStoreOptions {
  /** Attempts per write or delete before giving up with `Unavailable`. @default 6 */
  maxAttempts?: number;
  /** First backoff delay, doubled after each failed attempt (with jitter): 6 attempts span ~6 s. @default 200 */
  retryBaseMs?: number;
  /** Temporary files older than this are leftovers of a killed writer and are swept. @default 1 hour */
  partialMaxAgeMs?: number;
}

/**
 * Failures of the filesystem that may pass on their own. PermissionDenied is among them: a folder made
 * read-only (a remount, an operator's chmod) is the usual way a store stops taking writes for a while.
 */
function isTransient(error: unknown): boolean {
  if (
    error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.TimedOut || error instanceof Deno.errors.Busy ||
    error instanceof Deno.errors.WouldBlock
  ) return true;
  const code = (error as { code?: string })?.code ?? "";
  return ["EIO", "ENOSPC", "EDQUOT", "EROFS", "EBUSY", "EAGAIN", "EMFILE", "ENFILE"].includes(code);
}

export class LocalStore extends BaseStore {
  readonly kind = "local";
  readonly location: string;
  readonly #root: string;
  readonly #retry: StoreRetry;
  readonly #partialMaxAgeMs: number;
  #swept: Promise<unknown> | undefined;

  /** @param root the folder holding the objects; created on the first write. */
  constructor(root: string, options: LocalStoreOptions = {}) {
    super();
    this.#root = resolve(root);
    this.location = this.#root;
    this.#retry = { maxAttempts: options.maxAttempts ?? 6, retryBaseMs: options.retryBaseMs ?? 200 };
    if (!(this.#retry.maxAttempts >= 1) || !(this.#retry.retryBaseMs >= 0)) {
      throw new RangeError(
        `LocalStore needs maxAttempts >= 1 and retryBaseMs >= 0: current values are ` +
          `${this.#retry.maxAttempts}, ${this.#retry.retryBaseMs}`,
      );
    }
    this.#partialMaxAgeMs = options.partialMaxAgeMs ?? 60 * 60 * 1000;
  }

  #io<T>(what: string, request: () => Promise<T>): Promise<T> {
    return withRetry(this.location, what, request, isTransient, this.#retry);
  }

  /**
   * Removes temporary files (`*.bf-partial-*`) older than `olderThanMs` anywhere under the root: what a
   * writer killed mid-write left. Younger ones may belong to a write in flight in another process.
   * Returns how many it removed.
   */
  async sweepPartials(olderThanMs = this.#partialMaxAgeMs): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    const walk = async (dir: string) => {
      let entries: Deno.DirEntry[];
      try {
        entries = await Array.fromAsync(Deno.readDir(dir));
      } catch {
        return; // not there yet, or vanished
      }
      for (const entry of entries) {
        const path = join(dir, entry.name);
        if (entry.isDirectory) await walk(path);
        else if (entry.isFile && entry.name.includes(TEMP_MARKER)) {
          try {
            const { mtime } = await Deno.stat(path);
            if (mtime && mtime.getTime() < cutoff) {
              await Deno.remove(path);
              removed++;
            }
          } catch {
            // renamed or removed by its writer meanwhile
          }
        }
      }
    };
    await walk(this.#root);
    return removed;
  }

  #path(key: string): string {
    return join(this.#root, ...key.split("/"));
  }

  async put(key: string, data: PutData, _options: PutOptions = {}): Promise<ObjectInfo> {
    validateKey(key);
    const path = this.#path(key);
    const temp = `${path}${TEMP_MARKER}${crypto.randomUUID().slice(0, 8)}`;
    const hasher = new Sha256();
    // Once per store: a sweep that fails must not fail the write.
    await (this.#swept ??= this.sweepPartials().catch(() => 0));
    // The data may be a stream that can be read once, so only the steps before and after it are retried.
    const file = await this.#io(`create ${key}`, () => this.#createTemp(key, path, temp));
    try {
      try {
        for await (const chunk of chunksOf(data)) {
          hasher.update(chunk);
          await writeAll(file, chunk);
        }
        // Without fsync a crash after the rename could leave a renamed but empty file.
        await file.sync();
      } finally {
        file.close();
      }
      try {
        await this.#io(`rename into ${key}`, () => Deno.rename(temp, path));
      } catch (error) {
        if (error instanceof Deno.errors.IsADirectory || (await isDirectory(path))) {
          throw new FailedPrecondition(
            `key ${key} cannot be written: the local store holds objects under ${key}/ (a folder)`,
          );
        }
        throw error;
      }
    } catch (error) {
      await Deno.remove(temp).catch(() => {});
      throw error;
    }
    await syncDirectory(dirname(path));
    return { key, size: hasher.bytes, sha256: hasher.hex(), lastModified: new Date() };
  }

  /** Creates the parent folders and the temporary file. */
  async #createTemp(key: string, path: string, temp: string): Promise<Deno.FsFile> {
    for (let attempt = 1;; attempt++) {
      await this.#ensureParent(key, path);
      try {
        return await Deno.open(temp, { write: true, createNew: true });
      } catch (error) {
        // A concurrent delete pruned the folder we just made: make it again.
        if (!(error instanceof Deno.errors.NotFound) || attempt === 5) throw error;
      }
    }
  }

  async #ensureParent(key: string, path: string): Promise<void> {
    try {
      await Deno.mkdir(dirname(path), { recursive: true });
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists || error instanceof Deno.errors.NotADirectory) {
        throw new FailedPrecondition(
          `key ${key} cannot be written: one of its parent prefixes is an object in the local store`,
        );
      }
      throw error;
    }
  }

  async get(key: string): Promise<Uint8Array> {
    validateKey(key);
    try {
      return await Deno.readFile(this.#path(key));
    } catch (error) {
      throw this.#notFoundOr(key, error);
    }
  }

  async getStream(key: string, options: RangeOptions = {}): Promise<ReadableStream<Uint8Array>> {
    validateKey(key);
    let file: Deno.FsFile;
    let size: number;
    try {
      file = await Deno.open(this.#path(key), { read: true });
      const info = await file.stat();
      if (!info.isFile) {
        file.close();
        throw new NotFound(`object ${key} not found`);
      }
      size = info.size;
    } catch (error) {
      throw this.#notFoundOr(key, error);
    }
    let start: number, end: number;
    try {
      [start, end] = resolveRange(key, size, options);
      if (start > 0) await file.seek(start, Deno.SeekMode.Start);
    } catch (error) {
      file.close();
      throw error;
    }
    let remaining = end - start;
    let closed = false;
    const close = () => {
      if (!closed) {
        closed = true;
        file.close();
      }
    };
    return new ReadableStream<Uint8Array>({
      type: "bytes",
      async pull(controller) {
        if (remaining <= 0) {
          close();
          controller.close();
          return;
        }
        const buffer = new Uint8Array(Math.min(READ_CHUNK_BYTES, remaining));
        try {
          const n = await file.read(buffer);
          if (n === null) {
            close();
            controller.close();
            return;
          }
          remaining -= n;
          controller.enqueue(buffer.subarray(0, n));
        } catch (error) {
          close();
          controller.error(error);
        }
      },
      cancel() {
        close();
      },
    });
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    validateKey(key);
    try {
      const info = await Deno.stat(this.#path(key));
      if (!info.isFile) return null;
      return { key, size: info.size, lastModified: info.mtime ?? undefined };
    } catch (error) {
      if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) return null;
      throw error;
    }
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
    const slash = prefix.lastIndexOf("/");
    const dirKey = prefix.slice(0, slash + 1); // "" or "a/b/"
    const namePrefix = prefix.slice(slash + 1);
    yield* this.#walk(dirKey, namePrefix, options.recursive ?? false);
  }

  async *#walk(dirKey: string, namePrefix: string, recursive: boolean): AsyncIterable<ObjectInfo> {
    const dirPath = dirKey === "" ? this.#root : this.#path(dirKey.slice(0, -1));
    const entries: { name: string; isDir: boolean; sortKey: string }[] = [];
    try {
      for await (const entry of Deno.readDir(dirPath)) {
        if (!entry.name.startsWith(namePrefix) || entry.name.includes(TEMP_MARKER)) continue;
        if (!entry.isFile && !entry.isDirectory) continue;
        // A folder's keys all start with "name/", so it sorts as "name/" among its siblings.
        entries.push({
          name: entry.name,
          isDir: entry.isDirectory,
          sortKey: entry.isDirectory ? entry.name + "/" : entry.name,
        });
      }
    } catch (error) {
      if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) return;
      throw error;
    }
    entries.sort((a, b) => compareKeys(a.sortKey, b.sortKey));
    for (const entry of entries) {
      const key = dirKey + entry.name;
      if (entry.isDir) {
        if (recursive) {
          yield* this.#walk(key + "/", "", true);
        } else if (await hasObjects(this.#path(key))) {
          yield { key: key + "/", size: 0, isPrefix: true };
        }
      } else {
        try {
          const info = await Deno.stat(this.#path(key));
          yield { key, size: info.size, lastModified: info.mtime ?? undefined };
        } catch (error) {
          // Deleted between readDir and stat: it is simply not there any more.
          if (!(error instanceof Deno.errors.NotFound)) throw error;
        }
      }
    }
  }

  async delete(key: string): Promise<void> {
    validateKey(key);
    const path = this.#path(key);
    try {
      const info = await Deno.stat(path);
      if (!info.isFile) throw new Deno.errors.NotFound();
      await this.#io(`delete ${key}`, () => Deno.remove(path));
    } catch (error) {
      throw this.#notFoundOr(key, error);
    }
    // Remove the folders the object leaves empty, so non-recursive listings show no empty prefixes.
    let dir = dirname(path);
    while (dir.startsWith(this.#root + "/") && dir !== this.#root) {
      try {
        await Deno.remove(dir);
      } catch {
        break; // not empty (or a concurrent writer just used it): stop here
      }
      dir = dirname(dir);
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  #notFoundOr(key: string, error: unknown): unknown {
    if (
      error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory ||
      error instanceof Deno.errors.IsADirectory || error instanceof NotFound
    ) {
      return new NotFound(`object ${key} not found`);
    }
    return error;
  }
}

async function writeAll(file: Deno.FsFile, chunk: Uint8Array): Promise<void> {
  let written = 0;
  while (written < chunk.byteLength) written += await file.write(chunk.subarray(written));
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** True when a folder holds at least one object file, at any depth. */
async function hasObjects(path: string): Promise<boolean> {
  try {
    for await (const entry of Deno.readDir(path)) {
      if (entry.isFile && !entry.name.includes(TEMP_MARKER)) return true;
      if (entry.isDirectory && await hasObjects(join(path, entry.name))) return true;
    }
  } catch {
    // vanished while we looked
  }
  return false;
}

/** Makes a rename durable; best effort, since not every platform can fsync a directory. */
async function syncDirectory(path: string): Promise<void> {
  try {
    const dir = await Deno.open(path, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  } catch {
    // directory fsync unsupported here: the rename is still atomic, only less durable
  }
}

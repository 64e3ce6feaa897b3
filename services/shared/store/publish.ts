/**
 * Artifacts made of several objects (a vocab, a shard set, a model version) are published with a
 * manifest written last: every part is written first, then `<prefix>/MANIFEST.json` lists the parts
 * with their sizes and SHA-256. Readers treat an artifact as present only when its manifest is, so a
 * crash halfway through leaves parts nobody looks at, never an artifact that looks complete.
 *
 * @module
 */
import { AlreadyExists, FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { Sha256 } from "./hash.ts";
import type { ObjectInfo, ObjectStore, PutData, PutOptions } from "./store.ts";
import { validateKey, validatePrefix } from "./store.ts";

export const MANIFEST_NAME = "MANIFEST.json";
export const MANIFEST_FORMAT = "bertforge.manifest";
export const MANIFEST_VERSION = 1;

export interface ManifestPart {
  /** Path of the part relative to the artifact prefix, e.g. `vocab.txt` or `data/00001.bin`. */
  name: string;
  size: number;
  sha256: string;
  contentType?: string;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  /** The artifact prefix without a trailing `/`, e.g. `vocabs/zh`. */
  prefix: string;
  createdAt: string;
  parts: ManifestPart[];
  /** Whatever the producer records: lineage, settings, counts. */
  metadata: Record<string, unknown>;
}

export interface PublishOptions {
  metadata?: Record<string, unknown>;
  /** Replace an artifact already published at the prefix (it disappears first). @default false */
  overwrite?: boolean;
}

/** `vocabs/zh/` or `vocabs/zh` → `vocabs/zh`, validated. */
export function artifactPrefix(prefix: string, field = "prefix"): string {
  const trimmed = prefix.endsWith("/") ? prefix.slice(0, -1) : prefix;
  return validateKey(trimmed, field);
}

export function manifestKey(prefix: string): string {
  return `${artifactPrefix(prefix)}/${MANIFEST_NAME}`;
}

/**
 * Writes the parts of one artifact, then its manifest. Use it when parts are produced one by one
 * (shards); {@linkcode publish} does the same in one call for parts already at hand.
 *
 * @example
 * ```ts ignore
 * const writer = await ArtifactWriter.begin(store, "shards/wiki");
 * await writer.put("00000.bin", shardStream);
 * await writer.commit({ seqLen: 128 }); // the artifact exists from here on
 * ```
 */
export class ArtifactWriter {
  readonly prefix: string;
  readonly #store: ObjectStore;
  readonly #parts = new Map<string, ManifestPart>();
  #done = false;

  private constructor(store: ObjectStore, prefix: string) {
    this.#store = store;
    this.prefix = prefix;
  }

  /**
   * Starts an artifact at `prefix`. Refuses (`AlreadyExists`) when one is published there, unless
   * `overwrite`, which unpublishes and deletes the old artifact first.
   */
  static async begin(
    store: ObjectStore,
    prefix: string,
    options: { overwrite?: boolean } = {},
  ): Promise<ArtifactWriter> {
    const clean = artifactPrefix(prefix);
    if (await store.exists(`${clean}/${MANIFEST_NAME}`)) {
      if (!options.overwrite) {
        throw new AlreadyExists(`artifact ${clean} is already published; pass overwrite to replace it`);
      }
      await deleteArtifact(store, clean);
    }
    return new ArtifactWriter(store, clean);
  }

  /** Writes one part (streams are fine); its size and hash go into the manifest. */
  async put(name: string, data: PutData, options: PutOptions = {}): Promise<ObjectInfo> {
    this.#checkOpen();
    validateKey(name, "part name");
    if (name === MANIFEST_NAME) {
      throw new InvalidArgument(`part name ${MANIFEST_NAME} is reserved for the manifest`);
    }
    const info = await this.#store.put(`${this.prefix}/${name}`, data, options);
    this.#parts.set(name, {
      name,
      size: info.size,
      sha256: info.sha256!,
      ...(options.contentType ? { contentType: options.contentType } : {}),
    });
    return info;
  }

  /** Names of the parts written so far. */
  get partNames(): string[] {
    return [...this.#parts.keys()];
  }

  /** Writes the manifest: from this moment readers see the artifact. */
  async commit(metadata: Record<string, unknown> = {}): Promise<Manifest> {
    this.#checkOpen();
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      prefix: this.prefix,
      createdAt: new Date().toISOString(),
      parts: [...this.#parts.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
      metadata,
    };
    await this.#store.putJson(`${this.prefix}/${MANIFEST_NAME}`, manifest);
    this.#done = true;
    return manifest;
  }

  /** Deletes the parts written so far; the artifact never appears. */
  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    for (const name of this.#parts.keys()) {
      await this.#store.delete(`${this.prefix}/${name}`).catch(() => {});
    }
  }

  #checkOpen(): void {
    if (this.#done) throw new FailedPrecondition(`artifact writer for ${this.prefix} is already finished`);
  }
}

/**
 * Publishes an artifact from parts at hand: writes each part in order, then the manifest. On a
 * failure the parts written are deleted again and the error is rethrown.
 */
export async function publish(
  store: ObjectStore,
  prefix: string,
  parts: Record<string, PutData> | Iterable<[string, PutData]>,
  options: PublishOptions = {},
): Promise<Manifest> {
  const writer = await ArtifactWriter.begin(store, prefix, { overwrite: options.overwrite });
  const entries = Symbol.iterator in parts
    ? [...parts as Iterable<[string, PutData]>]
    : Object.entries(parts as Record<string, PutData>);
  try {
    for (const [name, data] of entries) await writer.put(name, data);
    return await writer.commit(options.metadata ?? {});
  } catch (error) {
    await writer.abort();
    throw error;
  }
}

export function isPublished(store: ObjectStore, prefix: string): Promise<boolean> {
  return store.exists(manifestKey(prefix));
}

/** The manifest of a published artifact; `NotFound` when there is none (absent or unfinished). */
export async function readManifest(store: ObjectStore, prefix: string): Promise<Manifest> {
  const key = manifestKey(prefix);
  let manifest: Manifest;
  try {
    manifest = await store.getJson<Manifest>(key);
  } catch (error) {
    if (error instanceof NotFound) {
      throw new NotFound(`artifact ${artifactPrefix(prefix)} not found (no ${MANIFEST_NAME})`);
    }
    throw error;
  }
  if (manifest?.format !== MANIFEST_FORMAT || !Array.isArray(manifest.parts)) {
    throw new FailedPrecondition(`${key} is not a ${MANIFEST_FORMAT} manifest`);
  }
  if (manifest.version !== MANIFEST_VERSION) {
    throw new FailedPrecondition(
      `${key} has manifest version ${manifest.version}; this build reads version ${MANIFEST_VERSION}`,
    );
  }
  return manifest;
}

/**
 * Rereads every part of a published artifact and checks its size and SHA-256 against the manifest.
 * @throws FailedPrecondition naming the first part that differs
 */
export async function verifyArtifact(store: ObjectStore, prefix: string): Promise<Manifest> {
  const manifest = await readManifest(store, prefix);
  for (const part of manifest.parts) {
    const key = `${manifest.prefix}/${part.name}`;
    const hasher = new Sha256();
    let stream: ReadableStream<Uint8Array>;
    try {
      stream = await store.getStream(key);
    } catch (error) {
      if (error instanceof NotFound) throw new FailedPrecondition(`artifact part ${key} is missing`);
      throw error;
    }
    for await (const chunk of stream) hasher.update(chunk);
    if (hasher.bytes !== part.size) {
      throw new FailedPrecondition(
        `artifact part ${key} is ${hasher.bytes} bytes, manifest says ${part.size}`,
      );
    }
    const digest = hasher.hex();
    if (digest !== part.sha256) {
      throw new FailedPrecondition(`artifact part ${key} has sha256 ${digest}, manifest says ${part.sha256}`);
    }
  }
  return manifest;
}

/** Prefixes of the published artifacts under `parent` (e.g. `models/` → `models/zh/v1`), sorted. */
export async function listArtifacts(store: ObjectStore, parent: string): Promise<string[]> {
  validatePrefix(parent, "parent");
  const found: string[] = [];
  const suffix = `/${MANIFEST_NAME}`;
  for await (const info of store.list(parent, { recursive: true })) {
    if (info.key.endsWith(suffix)) found.push(info.key.slice(0, -suffix.length));
  }
  return found;
}

/** Unpublishes (manifest first, so readers stop seeing it at once), then deletes every part. */
export async function deleteArtifact(store: ObjectStore, prefix: string): Promise<number> {
  const clean = artifactPrefix(prefix);
  try {
    await store.delete(`${clean}/${MANIFEST_NAME}`);
  } catch (error) {
    if (!(error instanceof NotFound)) throw error;
  }
  return await store.deletePrefix(`${clean}/`);
}

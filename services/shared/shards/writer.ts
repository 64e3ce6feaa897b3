/**
 * Writes a shard set to the store: shards of bounded size as records arrive, then the manifest last
 * (store/publish.ts ArtifactWriter). Memory: the one shard being filled.
 *
 * @module
 */
import { AlreadyExists } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { ArtifactWriter, isPublished } from "../store/publish.ts";
import { FORMAT_VERSION, type PretrainInstance, recordBytes, ShardAssembler, writeRecord } from "./format.ts";
import { type ShardEntry, type ShardManifest, shardSetPrefix } from "./manifest.ts";

export const DEFAULT_MAX_SHARD_BYTES = 64 * 1024 * 1024;

export interface ShardSetWriterOptions {
  idBytes: 2 | 4;
  maxSeqLen: number;
  /** Upper bound of one shard file (a single larger record still gets a shard of its own). @default 64 MiB */
  maxShardBytes?: number;
  /** Replace a complete set of the same name; without it an existing set is ALREADY_EXISTS. @default false */
  overwrite?: boolean;
}

/** The manifest fields the writer cannot know: what was built from what. */
export type ManifestFields = Omit<
  ShardManifest,
  "format" | "formatVersion" | "kind" | "name" | "idBytes" | "instances" | "bytes" | "shards"
>;

export class ShardSetWriter {
  readonly #artifact: ArtifactWriter;
  readonly #maxShardBytes: number;
  readonly #assembler: ShardAssembler;
  readonly #shards: ShardEntry[] = [];
  #instances = 0;

  private constructor(
    artifact: ArtifactWriter,
    readonly name: string,
    readonly options: ShardSetWriterOptions,
  ) {
    this.#artifact = artifact;
    this.#maxShardBytes = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
    this.#assembler = new ShardAssembler(options.idBytes, options.maxSeqLen);
  }

  /**
   * Starts a set. A complete set of that name is ALREADY_EXISTS unless `overwrite`; leftovers of an
   * interrupted build (parts without a manifest) are removed first, so they can never mix with new parts.
   */
  static async create(
    store: ObjectStore,
    name: string,
    options: ShardSetWriterOptions,
  ): Promise<ShardSetWriter> {
    const prefix = shardSetPrefix(name);
    if (!(await isPublished(store, prefix))) await store.deletePrefix(`${prefix}/`);
    else if (!options.overwrite) {
      throw new AlreadyExists(
        `shard set '${name}' already exists (${prefix}/); pass overwrite to rebuild it`,
      );
    }
    const artifact = await ArtifactWriter.begin(store, prefix, { overwrite: options.overwrite ?? false });
    return new ShardSetWriter(artifact, name, options);
  }

  get instances(): number {
    return this.#instances;
  }

  get shards(): readonly ShardEntry[] {
    return this.#shards;
  }

  async addInstance(instance: PretrainInstance): Promise<void> {
    const bytes = new Uint8Array(recordBytes(instance, this.options.idBytes));
    writeRecord(new DataView(bytes.buffer), 0, instance, this.options.idBytes);
    await this.addRecords(bytes, [0]);
  }

  /**
   * Appends encoded records (`recordOffsets[i]` = start of record i in `records`), cutting a new shard
   * whenever the next record would push the current one past the size bound.
   */
  async addRecords(records: Uint8Array, recordOffsets: ArrayLike<number>): Promise<void> {
    let runStart = 0;
    for (let i = 0; i < recordOffsets.length; i++) {
      const start = recordOffsets[i]!;
      const end = i + 1 < recordOffsets.length ? recordOffsets[i + 1]! : records.byteLength;
      const runBytes = start - recordOffsets[runStart]!;
      // +4 per record for its index entry.
      const wouldBe = this.#assembler.bytes + runBytes + (end - start) + 4 * (i - runStart + 1);
      if (wouldBe > this.#maxShardBytes && this.#assembler.count + (i - runStart) > 0) {
        this.#appendRun(records, recordOffsets, runStart, i);
        await this.#flush();
        runStart = i;
      }
    }
    this.#appendRun(records, recordOffsets, runStart, recordOffsets.length);
    this.#instances += recordOffsets.length;
  }

  #appendRun(records: Uint8Array, offsets: ArrayLike<number>, from: number, to: number): void {
    if (from >= to) return;
    const base = offsets[from]!;
    const end = to < offsets.length ? offsets[to]! : records.byteLength;
    const relative = new Array<number>(to - from);
    for (let i = from; i < to; i++) relative[i - from] = offsets[i]! - base;
    this.#assembler.addRecords(records.subarray(base, end), relative);
  }

  async #flush(): Promise<void> {
    if (this.#assembler.count === 0) return;
    const instances = this.#assembler.count;
    const bytes = this.#assembler.finish();
    const file = `shard-${String(this.#shards.length).padStart(5, "0")}.bin`;
    const info = await this.#artifact.put(file, bytes, { contentType: "application/octet-stream" });
    this.#shards.push({ file, instances, bytes: bytes.byteLength, sha256: info.sha256! });
  }

  /** Writes the last shard, then the manifest: from here on the set exists. */
  async finish(fields: ManifestFields): Promise<ShardManifest> {
    await this.#flush();
    const manifest: ShardManifest = {
      format: "bertforge-shards",
      formatVersion: FORMAT_VERSION,
      kind: "pretraining",
      name: this.name,
      idBytes: this.options.idBytes,
      instances: this.#instances,
      bytes: this.#shards.reduce((sum, shard) => sum + shard.bytes, 0),
      ...fields,
      shards: this.#shards,
    };
    await this.#artifact.commit(manifest as unknown as Record<string, unknown>);
    return manifest;
  }

  /** Deletes the shards written so far; the set never appears. */
  async abort(): Promise<void> {
    await this.#artifact.abort();
  }
}

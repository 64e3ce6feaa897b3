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
import { type ShardEntry, type ShardManifest, shardSetPrefix, type ShardSplit } from "./manifest.ts";

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
  | "format"
  | "formatVersion"
  | "kind"
  | "name"
  | "idBytes"
  | "instances"
  | "bytes"
  | "shards"
  | "evalInstances"
  | "evalShards"
>;

/** One series of shard files (the training split, or the held-out one) being filled. */
interface Series {
  assembler: ShardAssembler;
  entries: ShardEntry[];
  instances: number;
  filePrefix: string;
}

export class ShardSetWriter {
  readonly #artifact: ArtifactWriter;
  readonly #maxShardBytes: number;
  readonly #series: Record<ShardSplit, Series>;

  private constructor(
    artifact: ArtifactWriter,
    readonly name: string,
    readonly options: ShardSetWriterOptions,
  ) {
    this.#artifact = artifact;
    this.#maxShardBytes = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
    const series = (filePrefix: string): Series => ({
      assembler: new ShardAssembler(options.idBytes, options.maxSeqLen),
      entries: [],
      instances: 0,
      filePrefix,
    });
    this.#series = { train: series("shard"), eval: series("eval") };
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
    return this.#series.train.instances;
  }

  /** Shard files written so far (both splits). */
  get shardsWritten(): number {
    return this.#series.train.entries.length + this.#series.eval.entries.length;
  }

  get shards(): readonly ShardEntry[] {
    return this.#series.train.entries;
  }

  async addInstance(instance: PretrainInstance, split: ShardSplit = "train"): Promise<void> {
    const bytes = new Uint8Array(recordBytes(instance, this.options.idBytes));
    writeRecord(new DataView(bytes.buffer), 0, instance, this.options.idBytes);
    await this.addRecords(bytes, [0], split);
  }

  /**
   * Appends encoded records (`recordOffsets[i]` = start of record i in `records`), cutting a new shard
   * whenever the next record would push the current one past the size bound.
   */
  async addRecords(
    records: Uint8Array,
    recordOffsets: ArrayLike<number>,
    split: ShardSplit = "train",
  ): Promise<void> {
    const series = this.#series[split];
    let runStart = 0;
    for (let i = 0; i < recordOffsets.length; i++) {
      const start = recordOffsets[i]!;
      const end = i + 1 < recordOffsets.length ? recordOffsets[i + 1]! : records.byteLength;
      const runBytes = start - recordOffsets[runStart]!;
      // +4 per record for its index entry.
      const wouldBe = series.assembler.bytes + runBytes + (end - start) + 4 * (i - runStart + 1);
      if (wouldBe > this.#maxShardBytes && series.assembler.count + (i - runStart) > 0) {
        this.#appendRun(series, records, recordOffsets, runStart, i);
        await this.#flush(series);
        runStart = i;
      }
    }
    this.#appendRun(series, records, recordOffsets, runStart, recordOffsets.length);
    series.instances += recordOffsets.length;
  }

  #appendRun(
    series: Series,
    records: Uint8Array,
    offsets: ArrayLike<number>,
    from: number,
    to: number,
  ): void {
    if (from >= to) return;
    const base = offsets[from]!;
    const end = to < offsets.length ? offsets[to]! : records.byteLength;
    const relative = new Array<number>(to - from);
    for (let i = from; i < to; i++) relative[i - from] = offsets[i]! - base;
    series.assembler.addRecords(records.subarray(base, end), relative);
  }

  async #flush(series: Series): Promise<void> {
    if (series.assembler.count === 0) return;
    const instances = series.assembler.count;
    const bytes = series.assembler.finish();
    const file = `${series.filePrefix}-${String(series.entries.length).padStart(5, "0")}.bin`;
    const info = await this.#artifact.put(file, bytes, { contentType: "application/octet-stream" });
    series.entries.push({ file, instances, bytes: bytes.byteLength, sha256: info.sha256! });
  }

  /**
   * Writes the last shards, any extra parts (e.g. `lineage.json`), then the manifest: from here on the
   * set exists.
   */
  async finish(fields: ManifestFields, extraParts: Record<string, string> = {}): Promise<ShardManifest> {
    await this.#flush(this.#series.train);
    await this.#flush(this.#series.eval);
    for (const [name, content] of Object.entries(extraParts)) await this.#artifact.put(name, content);
    const { train, eval: held } = this.#series;
    const manifest: ShardManifest = {
      format: "bertforge-shards",
      formatVersion: FORMAT_VERSION,
      kind: "pretraining",
      name: this.name,
      idBytes: this.options.idBytes,
      instances: train.instances,
      bytes: [...train.entries, ...held.entries].reduce((sum, shard) => sum + shard.bytes, 0),
      ...fields,
      shards: train.entries,
      evalInstances: held.instances,
      evalShards: held.entries,
    };
    await this.#artifact.commit(manifest as unknown as Record<string, unknown>);
    return manifest;
  }

  /** Deletes the shards written so far; the set never appears. */
  async abort(): Promise<void> {
    await this.#artifact.abort();
  }
}

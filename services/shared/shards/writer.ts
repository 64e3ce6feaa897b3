/**
 * Writes a shard set to the store: shards of bounded size as records arrive, then the manifest last
 * (store/publish.ts ArtifactWriter). Memory: the one shard being filled.
 *
 * @module
 */
import { AlreadyExists } from "../errors.ts";
import type { ObjectInfo, ObjectStore } from "../store/store.ts";
import { ArtifactWriter, isPublished } from "../store/publish.ts";
import {
  FORMAT_VERSION,
  type PretrainInstance,
  recordBytes,
  shardHeader,
  shardTail,
  TRAILER_BYTES,
  writeRecord,
} from "./format.ts";
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

/** A shard file being streamed to the store. */
interface OpenShard {
  file: string;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  put: Promise<ObjectInfo>;
  /** Bytes written so far (header and records). */
  bytes: number;
  /** Absolute offset of each record written. */
  offsets: number[];
}

/** One series of shard files (the training split, or the held-out one). */
interface Series {
  filePrefix: string;
  entries: ShardEntry[];
  instances: number;
  open: OpenShard | null;
}

export class ShardSetWriter {
  readonly #artifact: ArtifactWriter;
  readonly #maxShardBytes: number;
  readonly #series: Record<ShardSplit, Series>;
  readonly #opened: OpenShard[] = [];

  private constructor(
    artifact: ArtifactWriter,
    readonly name: string,
    readonly options: ShardSetWriterOptions,
  ) {
    this.#artifact = artifact;
    this.#maxShardBytes = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
    const series = (filePrefix: string): Series => ({ entries: [], instances: 0, filePrefix, open: null });
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
   * Appends encoded records (`recordOffsets[i]` = start of record i in `records`), streaming them into
   * the current shard and starting a new one whenever the next record would push it past the size bound.
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
      const open = series.open ?? this.#open(series);
      const runBytes = start - recordOffsets[runStart]!;
      const recordsInShard = open.offsets.length + (i - runStart) + 1;
      const wouldBe = open.bytes + runBytes + (end - start) + 4 * (recordsInShard + 1) + TRAILER_BYTES;
      if (wouldBe > this.#maxShardBytes && recordsInShard > 1) {
        await this.#writeRun(open, records, recordOffsets, runStart, i);
        await this.#close(series);
        this.#open(series);
        runStart = i;
      }
    }
    if (recordOffsets.length > 0) {
      await this.#writeRun(series.open!, records, recordOffsets, runStart, recordOffsets.length);
    }
    series.instances += recordOffsets.length;
  }

  #open(series: Series): OpenShard {
    const file = `${series.filePrefix}-${String(series.entries.length).padStart(5, "0")}.bin`;
    const pipe = new TransformStream<Uint8Array, Uint8Array>();
    const writer = pipe.writable.getWriter();
    const put = this.#artifact.put(file, pipe.readable, { contentType: "application/octet-stream" });
    // A store that fails mid-upload must fail the writes too, or they would wait forever.
    put.catch((error) => writer.abort(error).catch(() => {}));
    const open: OpenShard = { file, writer, put, bytes: 0, offsets: [] };
    series.open = open;
    this.#opened.push(open);
    // Errors of this write surface in the awaited writes after it.
    this.#write(open, shardHeader(this.options.idBytes, this.options.maxSeqLen)).catch(() => {});
    return open;
  }

  async #write(open: OpenShard, chunk: Uint8Array): Promise<void> {
    open.bytes += chunk.byteLength;
    await open.writer.write(chunk);
  }

  async #writeRun(
    open: OpenShard,
    records: Uint8Array,
    offsets: ArrayLike<number>,
    from: number,
    to: number,
  ) {
    if (from >= to) return;
    const base = offsets[from]!;
    const end = to < offsets.length ? offsets[to]! : records.byteLength;
    for (let i = from; i < to; i++) open.offsets.push(open.bytes + offsets[i]! - base);
    await this.#write(open, records.subarray(base, end));
  }

  async #close(series: Series): Promise<void> {
    const open = series.open;
    if (!open) return;
    series.open = null;
    const tail = shardTail(open.offsets, open.bytes);
    await this.#write(open, tail);
    await open.writer.close();
    const info = await open.put;
    series.entries.push({
      file: open.file,
      instances: open.offsets.length,
      bytes: open.bytes,
      sha256: info.sha256!,
    });
  }

  /**
   * Writes the last shards, any extra parts (e.g. `lineage.json`), then the manifest: from here on the
   * set exists.
   */
  async finish(fields: ManifestFields, extraParts: Record<string, string> = {}): Promise<ShardManifest> {
    await this.#close(this.#series.train);
    await this.#close(this.#series.eval);
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
    for (const open of this.#opened) {
      await open.writer.abort(new Error("shard set build aborted")).catch(() => {});
      await open.put.catch(() => {});
    }
    await this.#artifact.abort();
  }
}

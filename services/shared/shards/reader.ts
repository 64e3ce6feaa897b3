/**
 * Reading shard sets: `ShardSet` for random access to one shard at a time, `InstanceStream` for the
 * trainer: a deterministic shuffle per epoch from a seed, a JSON cursor that resumes exactly,
 * partitioning by rank/world, prefetching of the next shard, optional dynamic masking.
 *
 * Order of epoch e (the same for every rank): the shards in a permutation drawn from (seed, e), taken `mix`
 * at a time, and the instances of each such group in one permutation drawn from (seed, e, group). Rank r of
 * w reads the global positions r, r + w, r + 2w, ... of that order, so the ranks are disjoint and together
 * cover the epoch whatever the shard count. Memory: the group being read plus the one prefetched.
 *
 * Why groups: the builder fills shards in corpus order, so with several sources each shard holds a few of
 * them; read one shard at a time, training walks from one domain to the next. Measured on zh-corpus (two
 * shards of rows of 128): the training loss jumped from 3.91 to 4.62 at the shard boundary and held-out MLM
 * accuracy fell a point (docs/results.md). Drawing from `mix` shards at once (all of them, for a set that
 * small) keeps every batch a sample of the whole corpus.
 *
 * @module
 */
import { FailedPrecondition, InvalidArgument } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { Sha256 } from "../store/hash.ts";
import type { Batch } from "../engine/engine.ts";
import { originalIds, type PretrainInstance, ShardView } from "./format.ts";
import {
  readManifest,
  type ShardEntry,
  type ShardManifest,
  shardSetPrefix,
  type ShardSplit,
} from "./manifest.ts";
import { createMaskedLmPredictions, type MaskingSettings } from "./masking.ts";
import { permutation, Rng } from "./rng.ts";
import { pretrainBatch } from "./batch.ts";

/** A complete shard set: its manifest and its shards, loaded one at a time. */
export class ShardSet {
  private constructor(readonly store: ObjectStore, readonly manifest: ShardManifest) {}

  /** Opens a set by name: NOT_FOUND when absent, FAILED_PRECONDITION when its build never finished. */
  static async open(store: ObjectStore, name: string): Promise<ShardSet> {
    return new ShardSet(store, await readManifest(store, name));
  }

  get name(): string {
    return this.manifest.name;
  }

  /** The shard files of a split. */
  shardsOf(split: ShardSplit = "train"): ShardEntry[] {
    return split === "eval" ? this.manifest.evalShards : this.manifest.shards;
  }

  /** Instances in a split. */
  instanceCount(split: ShardSplit = "train"): number {
    return split === "eval" ? this.manifest.evalInstances : this.manifest.instances;
  }

  /** Loads shard `index` whole (shards are bounded, 64 MiB by default); checks size and sha256 when `verify`. */
  async loadShard(index: number, options: { verify?: boolean; split?: ShardSplit } = {}): Promise<ShardView> {
    const shards = this.shardsOf(options.split);
    const entry = shards[index];
    if (!entry) throw new RangeError(`shard index ${index} out of range 0..${shards.length - 1}`);
    const key = `${shardSetPrefix(this.name)}/${entry.file}`;
    const bytes = await this.store.get(key);
    if (bytes.byteLength !== entry.bytes) {
      throw new FailedPrecondition(`${key}: ${bytes.byteLength} bytes but the manifest says ${entry.bytes}`);
    }
    if (options.verify ?? true) {
      const sha256 = new Sha256().update(bytes).hex();
      if (sha256 !== entry.sha256) {
        throw new FailedPrecondition(
          `${key}: sha256 ${sha256} does not match the manifest's ${entry.sha256}`,
        );
      }
    }
    const view = new ShardView(bytes, key);
    if (view.count !== entry.instances) {
      throw new FailedPrecondition(
        `${key}: holds ${view.count} instances but the manifest says ${entry.instances}`,
      );
    }
    return view;
  }

  /** Every instance in stored order (for inspection and tests; the trainer uses InstanceStream). */
  async *instances(
    options: { verify?: boolean; split?: ShardSplit } = {},
  ): AsyncIterableIterator<PretrainInstance> {
    for (let s = 0; s < this.shardsOf(options.split).length; s++) yield* await this.loadShard(s, options);
  }
}

/** Where a stream stands; JSON-serialisable, saved in trainer checkpoints. */
export interface ShardCursor {
  version: 1;
  /** Shard set the cursor belongs to. */
  shards: string;
  /** 0-based epoch. */
  epoch: number;
  /** Instances this rank has already read in `epoch`. */
  position: number;
  /**
   * What the order and the dynamic masks are drawn from. Both are pure functions of (seed, epoch, global
   * position), so this plus epoch/position is the complete random state; nothing else needs restoring.
   */
  rng: { algorithm: "xoshiro128**"; seed: number };
  rank: number;
  world: number;
  /** The split read; absent (older cursors) means the training split. */
  split?: ShardSplit;
  /** Shards read at once (`InstanceStreamOptions.mix`); absent (older cursors) means 1, their order. */
  mix?: number;
}

/** Shards a stream reads at once unless told otherwise: 4 × 64 MiB at most, plus the group prefetched. */
export const DEFAULT_MIX = 4;

export interface InstanceStreamOptions {
  /** Seed of the per-epoch shuffle (and of dynamic masks). */
  seed: number;
  /** This worker's index among `world` readers. @default 0 */
  rank?: number;
  /** @default 1 */
  world?: number;
  /** False reads instances in stored order every epoch. @default true */
  shuffle?: boolean;
  /**
   * Shards whose instances are shuffled together (see the module notes); a cursor's own value wins, so a
   * resumed stream keeps its order. 1 reads one shard at a time. @default DEFAULT_MIX
   */
  mix?: number;
  /**
   * Re-draw the masks every epoch from (seed, epoch, position), RoBERTa style, instead of using the
   * static masks stored in the shards. Settings default to the manifest's. @default false
   */
  dynamicMasking?:
    | boolean
    | Partial<Pick<MaskingSettings, "maskedLmProb" | "maxPredictionsPerSeq" | "wholeWord">>;
  /** Resume from a saved cursor (same set, seed, rank and world). */
  cursor?: ShardCursor;
  /** Stop after this many epochs (`next` then returns null). @default unbounded */
  maxEpochs?: number;
  /** Check each shard's sha256 against the manifest when it loads. @default true */
  verify?: boolean;
  /** Read the held-out split instead of the training split. @default "train" */
  split?: ShardSplit;
}

interface LoadedGroup {
  /** Index of the group in the epoch order. */
  group: number;
  /** Global position of the group's first instance in the epoch order. */
  start: number;
  count: number;
  views: ShardView[];
  /** Position of each view's first instance within the group. */
  offsets: number[];
  permutation: Uint32Array | null;
}

export class InstanceStream {
  readonly rank: number;
  readonly world: number;
  readonly seed: number;
  #epoch = 0;
  #position = 0;
  #shardOrder: Uint32Array = new Uint32Array(0);
  #groupStarts: number[] = [];
  #current: LoadedGroup | null = null;
  #prefetch: Promise<LoadedGroup> | null = null;
  #prefetchIndex = -1;
  readonly #masking: MaskingSettings | null;
  readonly mix: number;

  private constructor(readonly set: ShardSet, readonly options: InstanceStreamOptions) {
    this.rank = options.rank ?? 0;
    this.world = options.world ?? 1;
    this.seed = options.seed;
    if (!Number.isInteger(this.world) || this.world < 1) {
      throw new InvalidArgument(`world must be a positive integer: got ${this.world}`);
    }
    if (!Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.world) {
      throw new InvalidArgument(`rank must be an integer in 0..${this.world - 1}: got ${this.rank}`);
    }
    if (!Number.isSafeInteger(this.seed)) {
      throw new InvalidArgument(`seed must be an integer: got ${this.seed}`);
    }
    const manifest = set.manifest;
    if (options.dynamicMasking) {
      const overrides = options.dynamicMasking === true ? {} : options.dynamicMasking;
      this.#masking = {
        maskedLmProb: overrides.maskedLmProb ?? manifest.settings.maskedLmProb,
        maxPredictionsPerSeq: overrides.maxPredictionsPerSeq ?? manifest.settings.maxPredictionsPerSeq,
        wholeWord: overrides.wholeWord ?? manifest.settings.wholeWordMask,
        vocabSize: manifest.vocab.size,
        maskId: manifest.vocab.maskId,
        clsId: manifest.vocab.clsId,
        sepId: manifest.vocab.sepId,
      };
    } else {
      this.#masking = null;
    }
    const cursor = options.cursor;
    const mix = cursor ? cursor.mix ?? 1 : options.mix ?? DEFAULT_MIX;
    if (!Number.isInteger(mix) || mix < 1) {
      throw new InvalidArgument(`mix must be an integer >= 1: got ${mix}`);
    }
    this.mix = options.shuffle === false ? 1 : mix;
    if (cursor) {
      const split = options.split ?? "train";
      const expect = { shards: set.name, seed: this.seed, rank: this.rank, world: this.world, split };
      const got = {
        shards: cursor.shards,
        seed: cursor.rng?.seed,
        rank: cursor.rank,
        world: cursor.world,
        split: cursor.split ?? "train",
      };
      if (cursor.version !== 1 || JSON.stringify(expect) !== JSON.stringify(got)) {
        throw new InvalidArgument(
          `cursor belongs to another stream: cursor has ${JSON.stringify(got)}, this stream is ${
            JSON.stringify(expect)
          }`,
        );
      }
      if (
        !Number.isInteger(cursor.epoch) || cursor.epoch < 0 || !Number.isInteger(cursor.position) ||
        cursor.position < 0
      ) {
        throw new InvalidArgument(
          `cursor epoch and position must be non-negative integers: got ${cursor.epoch}, ${cursor.position}`,
        );
      }
      this.#epoch = cursor.epoch;
      this.#position = cursor.position;
    }
  }

  static async open(
    store: ObjectStore,
    name: string,
    options: InstanceStreamOptions,
  ): Promise<InstanceStream> {
    const set = await ShardSet.open(store, name);
    return new InstanceStream(set, options);
  }

  /** Opens a stream over an already opened set. */
  static over(set: ShardSet, options: InstanceStreamOptions): InstanceStream {
    return new InstanceStream(set, options);
  }

  get manifest(): ShardManifest {
    return this.set.manifest;
  }

  /** Instances this rank reads per epoch: ceil((N - rank) / world). */
  get instancesPerEpoch(): number {
    const total = this.set.instanceCount(this.options.split);
    return Math.max(0, Math.ceil((total - this.rank) / this.world));
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** The cursor after the last instance returned: a stream opened with it continues from the next one. */
  cursor(): ShardCursor {
    return {
      version: 1,
      shards: this.set.name,
      epoch: this.#epoch,
      position: this.#position,
      rng: { algorithm: "xoshiro128**", seed: this.seed },
      rank: this.rank,
      world: this.world,
      split: this.options.split ?? "train",
      mix: this.mix,
    };
  }

  /** The next instance of this rank, rolling into the next epoch at the end; null after `maxEpochs`. */
  async next(): Promise<PretrainInstance | null> {
    if (this.instancesPerEpoch === 0) return null;
    if (this.#position >= this.instancesPerEpoch) {
      this.#epoch++;
      this.#position = 0;
    }
    if (this.options.maxEpochs !== undefined && this.#epoch >= this.options.maxEpochs) return null;
    this.#ensureEpochOrder();
    const global = this.#position * this.world + this.rank;
    const group = await this.#groupHolding(global);
    const inGroup = group.permutation ? group.permutation[global - group.start]! : global - group.start;
    const v = lastAtMost(group.offsets, inGroup);
    const stored = group.views[v]!.get(inGroup - group.offsets[v]!);
    const instance = this.#masking ? this.#remask(stored, global) : stored;
    this.#position++;
    return instance;
  }

  /** The next `size` instances as an engine batch padded to `seqLen` (default: the set's max_seq_length). */
  async nextBatch(size: number, seqLen = this.manifest.settings.maxSeqLength): Promise<Batch | null> {
    const instances: PretrainInstance[] = [];
    while (instances.length < size) {
      const instance = await this.next();
      if (!instance) break;
      instances.push(instance);
    }
    if (instances.length === 0) return null;
    return pretrainBatch(instances, seqLen, this.manifest.vocab.padId);
  }

  async *[Symbol.asyncIterator](): AsyncIterableIterator<PretrainInstance> {
    for (let instance = await this.next(); instance; instance = await this.next()) yield instance;
  }

  #orderEpoch = -1;
  #ensureEpochOrder(): void {
    if (this.#orderEpoch === this.#epoch) return;
    const shards = this.set.shardsOf(this.options.split);
    this.#shardOrder = this.#shuffled
      ? permutation(shards.length, Rng.seeded(this.seed, this.#epoch, 0x5eed))
      : Uint32Array.from(shards.keys());
    this.#groupStarts = [];
    let start = 0;
    for (let i = 0; i < this.#shardOrder.length; i++) {
      if (i % this.mix === 0) this.#groupStarts.push(start);
      start += shards[this.#shardOrder[i]!]!.instances;
    }
    this.#orderEpoch = this.#epoch;
    this.#current = null;
    this.#prefetch = null;
    this.#prefetchIndex = -1;
  }

  get #shuffled(): boolean {
    return this.options.shuffle ?? true;
  }

  async #groupHolding(global: number): Promise<LoadedGroup> {
    const current = this.#current;
    if (current && global >= current.start && global < current.start + current.count) return current;
    const g = lastAtMost(this.#groupStarts, global);
    const loaded = this.#prefetchIndex === g && this.#prefetch ? await this.#prefetch : await this.#load(g);
    this.#current = loaded;
    // Start fetching the next group this rank needs while the current one is consumed.
    const next = g + 1 < this.#groupStarts.length ? g + 1 : -1;
    if (next >= 0) {
      this.#prefetchIndex = next;
      this.#prefetch = this.#load(next);
      this.#prefetch.catch(() => {}); // surfaced when awaited
    } else {
      this.#prefetch = null;
      this.#prefetchIndex = -1;
    }
    return loaded;
  }

  async #load(group: number): Promise<LoadedGroup> {
    const epoch = this.#epoch;
    const members = Array.from(this.#shardOrder.subarray(group * this.mix, (group + 1) * this.mix));
    const views = await Promise.all(members.map((shardIndex) =>
      this.set.loadShard(shardIndex, {
        verify: this.options.verify ?? true,
        ...(this.options.split ? { split: this.options.split } : {}),
      })
    ));
    const offsets: number[] = [];
    let count = 0;
    for (const view of views) {
      offsets.push(count);
      count += view.count;
    }
    // One shard a group draws from (seed, epoch, shard) as before groups existed, so mix 1 keeps old orders.
    const rng = this.mix === 1
      ? Rng.seeded(this.seed, epoch, 0x1d5, members[0]!)
      : Rng.seeded(this.seed, epoch, 0x6d1, group);
    const order = this.#shuffled ? permutation(count, rng) : null;
    return { group, start: this.#groupStarts[group]!, count, views, offsets, permutation: order };
  }

  #remask(stored: PretrainInstance, global: number): PretrainInstance {
    const masking = this.#masking!;
    const rng = Rng.seeded(this.seed, this.#epoch, global, 0xa5c);
    const masked = createMaskedLmPredictions(originalIds(stored), stored.wordStarts, masking, rng);
    const instance: PretrainInstance = {
      inputIds: masked.inputIds,
      segmentALength: stored.segmentALength,
      isRandomNext: stored.isRandomNext,
      maskedPositions: masked.positions,
      maskedLabels: masked.labels,
    };
    if (stored.wordStarts) instance.wordStarts = stored.wordStarts;
    return instance;
  }
}

/** Index of the last entry of ascending `starts` that is <= `value` (0 when none is). */
function lastAtMost(starts: readonly number[], value: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= value) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

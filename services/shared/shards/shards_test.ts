import { assert, assertEquals, assertNotEquals, assertRejects, assertThrows } from "@std/assert";
import { AlreadyExists, FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { LocalStore } from "../store/local.ts";
import type { ObjectStore } from "../store/store.ts";
import {
  type ManifestFields,
  originalIds,
  pretrainBatch,
  type PretrainInstance,
  readManifest,
  Rng,
  ShardAssembler,
  type ShardCursor,
  ShardSet,
  ShardSetWriter,
  ShardView,
} from "./mod.ts";
import { InstanceStream } from "./reader.ts";
import { listShardSets } from "./manifest.ts";

const VOCAB = { sha256: "0".repeat(64), size: 99, padId: 0, clsId: 2, sepId: 3, maskId: 4 };

/** A made-up but well-formed instance: [CLS] a.. [SEP] b.. [SEP], some positions masked. */
function fakeInstance(rng: Rng, vocabSize = 99, withWords = false): PretrainInstance {
  const lengthA = rng.randint(1, 9);
  const lengthB = rng.randint(1, 9);
  const length = lengthA + lengthB + 3;
  const original = new Uint32Array(length);
  for (let i = 0; i < length; i++) original[i] = rng.randint(5, vocabSize - 1);
  original[0] = VOCAB.clsId;
  original[lengthA + 1] = VOCAB.sepId;
  original[length - 1] = VOCAB.sepId;
  const positions = [1, lengthA + 2].filter((p) => p < length - 1);
  const inputIds = original.slice();
  for (const p of positions) inputIds[p] = VOCAB.maskId;
  const instance: PretrainInstance = {
    inputIds,
    segmentALength: lengthA + 2,
    isRandomNext: rng.random() < 0.5,
    maskedPositions: Uint16Array.from(positions),
    maskedLabels: Uint32Array.from(positions.map((p) => original[p]!)),
  };
  if (withWords) instance.wordStarts = Uint8Array.from(original, () => (rng.random() < 0.6 ? 1 : 0));
  return instance;
}

function fields(instances: PretrainInstance[]): ManifestFields {
  return {
    tokens: instances.reduce((s, x) => s + x.inputIds.length, 0),
    maskedTokens: instances.reduce((s, x) => s + x.maskedPositions.length, 0),
    randomNext: instances.filter((x) => x.isRandomNext).length,
    vocab: VOCAB,
    corpus: { name: "test", sha256: "1".repeat(64), bytes: 0, documents: 0, sentences: 0, files: [] },
    settings: {
      maxSeqLength: 24,
      maxPredictionsPerSeq: 4,
      maskedLmProb: 0.15,
      shortSeqProb: 0.1,
      dupeFactor: 1,
      seed: 1,
      wholeWordMask: false,
      randomNextProb: 0.5,
      blockBytes: 1 << 20,
      maxShardBytes: 600,
      evalFraction: 0,
    },
    builder: { name: "shards_test" },
  };
}

async function withStore(fn: (store: ObjectStore) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "bf-shards-" });
  const store = new LocalStore(dir);
  try {
    await fn(store);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes `count` fake instances as set `name` with small shards; returns them in stored order. */
async function writeSet(store: ObjectStore, name: string, count: number, maxShardBytes = 600) {
  const rng = Rng.seeded(42);
  const instances = Array.from({ length: count }, () => fakeInstance(rng, 99, true));
  const writer = await ShardSetWriter.create(store, name, { idBytes: 2, maxSeqLen: 24, maxShardBytes });
  for (const instance of instances) await writer.addInstance(instance);
  await writer.finish(fields(instances));
  return instances;
}

const key = (x: PretrainInstance) => Array.from(originalIds(x)).join(",") + `|${x.segmentALength}`;

Deno.test("ShardView round-trips instances with uint16 and uint32 ids, word starts included", () => {
  for (const [idBytes, vocabSize] of [[2, 60000], [4, 100000]] as const) {
    const rng = Rng.seeded(7);
    const instances = Array.from({ length: 13 }, (_, i) => fakeInstance(rng, vocabSize, i % 2 === 0));
    const assembler = new ShardAssembler(idBytes, 24);
    for (const instance of instances) assembler.addInstance(instance);
    const view = new ShardView(assembler.finish(), "mem");
    assertEquals(view.count, 13);
    assertEquals(view.idBytes, idBytes);
    assertEquals([...view], instances);
  }
});

Deno.test("ShardView refuses a wrong magic, an unknown version and a truncated file", () => {
  const assembler = new ShardAssembler(2, 24);
  assembler.addInstance(fakeInstance(Rng.seeded(1)));
  const good = assembler.finish();
  const badMagic = good.slice();
  badMagic[0] = 0x58;
  assertThrows(() => new ShardView(badMagic, "x.bin"), InvalidArgument, "not a shard");
  const badVersion = good.slice();
  new DataView(badVersion.buffer).setUint32(8, 99, true);
  assertThrows(() => new ShardView(badVersion, "x.bin"), InvalidArgument, "version 99");
  assertThrows(() => new ShardView(good.subarray(0, good.length - 3), "x.bin"), InvalidArgument, "truncated");
});

Deno.test("ShardView refuses a uint16 shard for ids above 65535", () => {
  const instance = fakeInstance(Rng.seeded(1));
  instance.inputIds[1] = 70000;
  const assembler = new ShardAssembler(2, 24);
  assertThrows(() => assembler.addInstance(instance), InvalidArgument, "70000");
});

Deno.test("ShardSetWriter bounds shard sizes, publishes the manifest last and refuses an existing name", async () => {
  await withStore(async (store) => {
    const writer = await ShardSetWriter.create(store, "s", { idBytes: 2, maxSeqLen: 24, maxShardBytes: 600 });
    const rng = Rng.seeded(3);
    const instances = Array.from({ length: 100 }, () => fakeInstance(rng));
    for (const instance of instances) await writer.addInstance(instance);
    assert(writer.shards.length > 1, "some shards were written before finish");
    await assertRejects(() => readManifest(store, "s"), FailedPrecondition, "incomplete");
    const manifest = await writer.finish(fields(instances));
    assert(manifest.shards.length > 3);
    for (const shard of manifest.shards) assert(shard.bytes <= 600, `shard of ${shard.bytes} bytes`);
    assertEquals(manifest.instances, 100);
    const set = await ShardSet.open(store, "s");
    const read: PretrainInstance[] = [];
    for await (const instance of set.instances()) read.push(instance);
    assertEquals(read, instances);
    await assertRejects(
      () => ShardSetWriter.create(store, "s", { idBytes: 2, maxSeqLen: 24 }),
      AlreadyExists,
      "'s' already exists",
    );
    const again = await ShardSetWriter.create(store, "s", { idBytes: 2, maxSeqLen: 24, overwrite: true });
    await assertRejects(() => readManifest(store, "s"), NotFound);
    await again.addInstance(instances[0]!);
    await again.finish(fields(instances.slice(0, 1)));
    assertEquals((await readManifest(store, "s")).instances, 1);
    assertEquals((await listShardSets(store)).map((m) => m.name), ["s"]);
  });
});

Deno.test("ShardSet.loadShard detects a shard whose bytes changed", async () => {
  await withStore(async (store) => {
    await writeSet(store, "c", 20);
    const bytes = await store.get("shards/c/shard-00000.bin");
    bytes[bytes.length - 10]! ^= 1;
    await store.put("shards/c/shard-00000.bin", bytes);
    const set = await ShardSet.open(store, "c");
    await assertRejects(() => set.loadShard(0), FailedPrecondition, "sha256");
  });
});

Deno.test("InstanceStream reads every instance once per epoch, in a new seeded order each epoch", async () => {
  await withStore(async (store) => {
    const instances = await writeSet(store, "e", 57);
    const stream = await InstanceStream.open(store, "e", { seed: 5, maxEpochs: 2 });
    const epochs: string[][] = [[], []];
    for await (const instance of stream) epochs[stream.epoch]!.push(key(instance));
    const expected = instances.map(key).sort();
    assertEquals([...epochs[0]!].sort(), expected);
    assertEquals([...epochs[1]!].sort(), expected);
    assertNotEquals(epochs[0], epochs[1]);
    assertNotEquals(epochs[0], instances.map(key));
    const again = await InstanceStream.open(store, "e", { seed: 5, maxEpochs: 1 });
    const replay: string[] = [];
    for await (const instance of again) replay.push(key(instance));
    assertEquals(replay, epochs[0]);
  });
});

Deno.test("InstanceStream cursor resumes to exactly the sequence of an uninterrupted read", async () => {
  await withStore(async (store) => {
    await writeSet(store, "r", 41);
    for (const dynamicMasking of [false, true]) {
      const options = { seed: 9, rank: 1, world: 2, maxEpochs: 3, dynamicMasking };
      const full: PretrainInstance[] = [];
      for await (const instance of await InstanceStream.open(store, "r", options)) full.push(instance);
      assertEquals(full.length, 3 * 20);
      for (const stopAt of [0, 1, 7, 19, 20, 33, 59]) {
        const first = await InstanceStream.open(store, "r", options);
        const got: PretrainInstance[] = [];
        for (let i = 0; i < stopAt; i++) got.push((await first.next())!);
        const saved: ShardCursor = JSON.parse(JSON.stringify(first.cursor()));
        const resumed = await InstanceStream.open(store, "r", { ...options, cursor: saved });
        for await (const instance of resumed) got.push(instance);
        assertEquals(got, full, `resume after ${stopAt} (dynamic masking ${dynamicMasking})`);
      }
    }
  });
});

Deno.test("InstanceStream refuses a cursor of another seed, set or partition", async () => {
  await withStore(async (store) => {
    await writeSet(store, "k", 10);
    const stream = await InstanceStream.open(store, "k", { seed: 1, rank: 0, world: 2 });
    await stream.next();
    const cursor = stream.cursor();
    await assertRejects(
      () => InstanceStream.open(store, "k", { seed: 2, rank: 0, world: 2, cursor }),
      InvalidArgument,
    );
    await assertRejects(
      () => InstanceStream.open(store, "k", { seed: 1, rank: 1, world: 2, cursor }),
      InvalidArgument,
    );
    await assertRejects(
      () => InstanceStream.open(store, "k", { seed: 1, rank: 0, world: 2, cursor, split: "eval" }),
      InvalidArgument,
      '"split":"train"',
    );
    const { split: _, ...older } = cursor;
    await InstanceStream.open(store, "k", { seed: 1, rank: 0, world: 2, cursor: older });
    await assertRejects(
      () => InstanceStream.open(store, "k", { seed: 1, rank: 2, world: 2 }),
      InvalidArgument,
      "rank",
    );
  });
});

Deno.test("InstanceStream partitions by rank/world are disjoint and cover the epoch", async () => {
  await withStore(async (store) => {
    const instances = await writeSet(store, "p", 50);
    for (const world of [1, 3, 4]) {
      const seen = new Map<string, number>();
      for (let rank = 0; rank < world; rank++) {
        const stream = await InstanceStream.open(store, "p", { seed: 3, rank, world, maxEpochs: 1 });
        let count = 0;
        for await (const instance of stream) {
          seen.set(key(instance), (seen.get(key(instance)) ?? 0) + 1);
          count++;
        }
        assertEquals(count, stream.instancesPerEpoch);
      }
      assertEquals([...seen.keys()].sort(), instances.map(key).sort(), `world ${world} covers`);
      assert([...seen.values()].every((n) => n === 1), `world ${world} is disjoint`);
    }
  });
});

Deno.test("InstanceStream dynamic masking draws new masks per epoch and keeps the original tokens", async () => {
  await withStore(async (store) => {
    await writeSet(store, "d", 30);
    const stream = await InstanceStream.open(store, "d", {
      seed: 4,
      shuffle: false,
      dynamicMasking: true,
      maxEpochs: 2,
    });
    const byEpoch: PretrainInstance[][] = [[], []];
    for await (const instance of stream) byEpoch[stream.epoch]!.push(instance);
    let differ = 0;
    for (let i = 0; i < 30; i++) {
      const [a, b] = [byEpoch[0]![i]!, byEpoch[1]![i]!];
      assertEquals(originalIds(a), originalIds(b));
      assert(a.maskedPositions.length >= 1);
      if (key(a) === key(b) && a.maskedPositions.join() !== b.maskedPositions.join()) differ++;
    }
    assert(differ > 10, `masks changed between epochs for ${differ}/30 instances`);
  });
});

Deno.test("pretrainBatch pads to (B, T) with -100 MLM labels outside the predictions", () => {
  const rng = Rng.seeded(2);
  const instances = [fakeInstance(rng), fakeInstance(rng), fakeInstance(rng)];
  const T = 23;
  const batch = pretrainBatch(instances, T, VOCAB.padId);
  assertEquals([batch.B, batch.T, batch.inputIds.length, batch.nspLabels!.length], [3, T, 3 * T, 3]);
  for (let b = 0; b < 3; b++) {
    const x = instances[b]!;
    const row = b * T;
    assertEquals(Array.from(batch.inputIds.subarray(row, row + x.inputIds.length)), Array.from(x.inputIds));
    assertEquals(batch.inputIds[row + T - 1], x.inputIds.length === T ? x.inputIds[T - 1] : VOCAB.padId);
    assertEquals(batch.attentionMask.subarray(row, row + T).reduce((s, v) => s + v, 0), x.inputIds.length);
    assertEquals(batch.tokenTypeIds[row + x.segmentALength - 1], 0);
    assertEquals(batch.tokenTypeIds[row + x.segmentALength], 1);
    const labelled = [...batch.mlmLabels!.subarray(row, row + T)].flatMap((
      v,
      t,
    ) => (v === -100 ? [] : [[t, v]]));
    assertEquals(labelled, [...x.maskedPositions].map((p, k) => [p, x.maskedLabels[k]]));
    assertEquals(batch.nspLabels![b], x.isRandomNext ? 1 : 0);
  }
  assertThrows(() => pretrainBatch(instances, 4, 0), InvalidArgument, "seq_len 4");
});

Deno.test("InstanceStream fetches the next shard while the current one is being read", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bf-shards-" });
  const fetched: string[] = [];
  // The real local store, with its reads recorded.
  class RecordingStore extends LocalStore {
    override get(key: string): Promise<Uint8Array> {
      fetched.push(key);
      return super.get(key);
    }
  }
  const store = new RecordingStore(dir);
  try {
    await writeSet(store, "pre", 60, 400);
    const stream = await InstanceStream.open(store, "pre", { seed: 2, shuffle: false });
    const shards = stream.manifest.shards;
    assert(shards.length >= 3);
    fetched.length = 0; // the manifest
    await stream.next();
    assertEquals(fetched, [`shards/pre/${shards[0]!.file}`, `shards/pre/${shards[1]!.file}`]);
    for (let i = 1; i < shards[0]!.instances; i++) await stream.next();
    assertEquals(fetched.length, 2, "no read inside a shard");
    await stream.next();
    assertEquals(fetched.at(-1), `shards/pre/${shards[2]!.file}`);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("InstanceStream shuffles `mix` shards together, so the first batch already draws from several", async () => {
  await withStore(async (store) => {
    const instances = await writeSet(store, "m", 60, 400);
    const stream0 = await InstanceStream.open(store, "m", { seed: 3, mix: 1 });
    const shards = stream0.manifest.shards;
    assert(shards.length >= 4, `want several shards, got ${shards.length}`);
    // Which stored shard each instance lives in (stored order fills shards one after the other).
    const shardOf = new Map<string, number>();
    let at = 0;
    shards.forEach((s, i) => {
      for (let j = 0; j < s.instances; j++) shardOf.set(key(instances[at++]!), i);
    });
    // How often consecutive instances of an epoch come from different stored shards.
    const switches = async (options: { mix?: number }) => {
      const stream = await InstanceStream.open(store, "m", { seed: 3, maxEpochs: 1, ...options });
      const all: string[] = [];
      for await (const instance of stream) all.push(key(instance));
      assertEquals([...all].sort(), instances.map(key).sort(), "every instance once");
      return all.filter((k, i) => i > 0 && shardOf.get(k) !== shardOf.get(all[i - 1]!)).length;
    };
    // One shard at a time: one switch per shard boundary, so a run of batches sees one shard only.
    assertEquals(await switches({ mix: 1 }), shards.length - 1);
    // Mixed (the default mixes 4; here all of them): consecutive instances mostly come from different shards.
    assert((await switches({})) > 2 * shards.length);
    assert((await switches({ mix: shards.length })) > 2 * shards.length);
  });
});

Deno.test("InstanceStream: a cursor carries its mix; a cursor without one (older checkpoints) resumes shard by shard", async () => {
  await withStore(async (store) => {
    await writeSet(store, "c", 60, 400);
    const read = async (options: Parameters<typeof InstanceStream.open>[2], n: number) => {
      const stream = await InstanceStream.open(store, "c", options);
      const out: string[] = [];
      for (let i = 0; i < n; i++) out.push(key((await stream.next())!));
      return { out, cursor: stream.cursor() };
    };
    const mixed = await read({ seed: 4, mix: 3 }, 60);
    assertEquals(mixed.cursor.mix, 3);
    const first = await read({ seed: 4, mix: 3 }, 25);
    // The cursor's mix wins over the option's, so a job resumes in the order it began.
    const rest = await read({ seed: 4, mix: 1, cursor: first.cursor }, 35);
    assertEquals([...first.out, ...rest.out], mixed.out);
    const old = await read({ seed: 4, mix: 1 }, 60);
    const oldFirst = await read({ seed: 4, mix: 1 }, 10);
    const { mix: _, ...withoutMix } = oldFirst.cursor;
    const oldRest = await read({ seed: 4, cursor: withoutMix as ShardCursor }, 50);
    assertEquals([...oldFirst.out, ...oldRest.out], old.out);
    await assertRejects(() => read({ seed: 4, mix: 0 }, 1), InvalidArgument, "mix must be an integer >= 1");
  });
});

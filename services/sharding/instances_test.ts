import { assert, assertEquals } from "@std/assert";
import { originalIds, type PretrainInstance } from "../shared/shards/format.ts";
import { Rng } from "../shared/shards/rng.ts";
import { createInstancesFromDocument, type Document, type InstanceSettings } from "./instances.ts";

const CLS = 2, SEP = 3, MASK = 4;

/** A document of sentences with the given lengths; token ids encode (document, sentence, position). */
function document(d: number, lengths: number[]): Document {
  const ids: number[] = [], starts = [0];
  lengths.forEach((length, s) => {
    for (let t = 0; t < length; t++) ids.push(1000 + d * 10000 + s * 100 + t);
    starts.push(ids.length);
  });
  return {
    ids: Uint32Array.from(ids),
    wordStarts: new Uint8Array(ids.length).fill(1),
    sentenceStarts: Uint32Array.from(starts),
  };
}

function settings(overrides: Partial<InstanceSettings> = {}): InstanceSettings {
  return {
    maxSeqLength: 32,
    shortSeqProb: 0,
    randomNextProb: 0.5,
    masking: {
      maskedLmProb: 0.15,
      maxPredictionsPerSeq: 5,
      vocabSize: 100000,
      maskId: MASK,
      clsId: CLS,
      sepId: SEP,
      wholeWord: false,
    },
    ...overrides,
  };
}

/** Instances of every document, copied out of the builder's reused buffers. */
function instancesOf(documents: Document[], s: InstanceSettings, seed = 1): PretrainInstance[] {
  const out: PretrainInstance[] = [];
  const rng = Rng.seeded(seed);
  const copy = (x: PretrainInstance) =>
    out.push({
      ...x,
      inputIds: x.inputIds.slice(),
      maskedPositions: x.maskedPositions.slice(),
      maskedLabels: x.maskedLabels.slice(),
    });
  documents.forEach((_, d) => createInstancesFromDocument(documents, d, s, rng, copy));
  return out;
}

Deno.test("with no random next and nothing to truncate, A then B replay each document in order", () => {
  // 3-token sentences fill the 21-token budget of seq 24 exactly: 7 sentences a chunk, no truncation.
  const documents = [document(0, Array(14).fill(3)), document(1, Array(21).fill(3))];
  const instances = instancesOf(documents, settings({ maxSeqLength: 24, randomNextProb: 0 }));
  assertEquals(instances.length, 5);
  const replay: number[] = [];
  for (const x of instances) {
    const ids = originalIds(x);
    assertEquals([ids[0], ids[x.segmentALength - 1], ids[ids.length - 1]], [CLS, SEP, SEP]);
    assertEquals(x.isRandomNext, false);
    replay.push(...Array.from(ids).filter((id) => id >= 1000));
  }
  assertEquals(replay, [...documents[0]!.ids, ...documents[1]!.ids]);
});

Deno.test("a random next comes from another document, and sentences it did not use are put back", () => {
  const documents = Array.from({ length: 20 }, (_, d) => document(d, Array(12).fill(3)));
  const instances = instancesOf(documents, settings({ maxSeqLength: 24 }));
  const docOf = (id: number) => Math.floor((id - 1000) / 10000);
  const sentenceOf = (id: number) => Math.floor(id / 100);
  let random = 0;
  const used = new Set<number>();
  for (const x of instances) {
    const ids = originalIds(x);
    const a = docOf(ids[1]!), b = docOf(ids[x.segmentALength]!);
    if (x.isRandomNext) {
      random++;
      assert(a !== b, "random next from the same document");
    } else {
      assertEquals(a, b);
      // The true next: B continues right after A.
      assertEquals(sentenceOf(ids[x.segmentALength]!), sentenceOf(ids[x.segmentALength - 2]!) + 1);
    }
    for (let t = 1; t < x.segmentALength - 1; t++) used.add(sentenceOf(ids[t]!));
    if (!x.isRandomNext) {
      for (let t = x.segmentALength; t < ids.length - 1; t++) used.add(sentenceOf(ids[t]!));
    }
  }
  assert(
    random > instances.length * 0.3 && random < instances.length * 0.75,
    `${random}/${instances.length}`,
  );
  // Put back: no sentence of a document is lost, however many random nexts it took.
  for (const d of documents) {
    for (const id of d.ids) assert(used.has(sentenceOf(id)), `sentence of ${id} never used`);
  }
});

Deno.test("truncation keeps every instance within max_seq_length and both segments non-empty", () => {
  const documents = [document(0, [40, 50, 3]), document(1, [70]), document(2, [1, 1, 1])];
  for (let seed = 0; seed < 20; seed++) {
    for (const x of instancesOf(documents, settings({ maxSeqLength: 16, shortSeqProb: 0.5 }), seed)) {
      assert(x.inputIds.length <= 16);
      assert(x.segmentALength >= 3 && x.segmentALength <= x.inputIds.length - 2);
      assert(x.maskedPositions.length >= 1 && x.maskedPositions.length <= 5);
    }
  }
});

import { assert, assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import { Rng } from "../shards/rng.ts";
import { epochBatches } from "./batch.ts";

/** Tokens the batches feed the model: each batch padded to its longest row. */
function padded(batches: Uint32Array[], lengths: ArrayLike<number>): number {
  return batches.reduce((sum, b) => sum + b.length * Math.max(...Array.from(b, (i) => lengths[i]!)), 0);
}

/** The mean share of a batch held by its most frequent class: 1 when every batch is one class. */
function majorityShare(batches: Uint32Array[], labels: ArrayLike<number>): number {
  const shares = batches.map((b) => {
    const counts = new Map<number, number>();
    for (const i of b) counts.set(labels[i]!, (counts.get(labels[i]!) ?? 0) + 1);
    return Math.max(...counts.values()) / b.length;
  });
  return shares.reduce((a, s) => a + s, 0) / shares.length;
}

// The demo's poem forms as tokens: 4 or 8 lines of 5 or 7 characters, with punctuation, [CLS] and [SEP].
const FORM_LENGTHS = [26, 34, 50, 66];

Deno.test("epochBatches() with labels mixes the classes in every batch when the label is the length", () => {
  const rng = Rng.seeded(7);
  const labels = Uint32Array.from({ length: 960 }, () => rng.randint(0, 3));
  const lengths = Uint32Array.from(labels, (label) => FORM_LENGTHS[label]!);
  const byLength = epochBatches(960, 16, { seed: 1, epoch: 0, lengths });
  const mixed = epochBatches(960, 16, { seed: 1, epoch: 0, lengths, labels });
  // Length alone sorts the forms apart: nearly every batch is one class, as in the collapsed quick demo.
  assert(majorityShare(byLength, labels) > 0.9, `length only: ${majorityShare(byLength, labels)}`);
  // Four balanced classes in batches of 16: about 4 of each, so the largest holds little more than a quarter.
  assert(majorityShare(mixed, labels) < 0.4, `with labels: ${majorityShare(mixed, labels)}`);
  for (const batch of mixed) {
    assertEquals(new Set(Array.from(batch, (i) => labels[i])).size, 4, `every form in ${batch}`);
  }
  assertEquals(mixed.flatMap((b) => [...b]).sort((x, y) => x - y), [...Array(960).keys()]);
});

Deno.test("epochBatches() with labels spreads a rare class that is also the shortest over the batches", () => {
  // 1 in 10 features is short and of class 1: sorted by length, they would fill a few batches of their own.
  const labels = Uint32Array.from({ length: 800 }, (_, i) => (i % 10 === 0 ? 1 : 0));
  const lengths = Uint32Array.from(labels, (label) => (label === 1 ? 12 : 90));
  const batches = epochBatches(800, 20, { seed: 3, epoch: 0, lengths, labels });
  const rare = batches.map((b) => Array.from(b).filter((i) => labels[i] === 1).length);
  assert(rare.every((n) => n >= 1 && n <= 3), JSON.stringify(rare));
});

Deno.test("epochBatches() with labels keeps the padding of a length sort when the label does not track the length", () => {
  const rng = Rng.seeded(5);
  const lengths = Uint32Array.from({ length: 1000 }, () => rng.randint(3, 122));
  const labels = Uint32Array.from({ length: 1000 }, () => rng.randint(0, 3));
  const real = lengths.reduce((a, b) => a + b, 0);
  const random = padded(epochBatches(1000, 16, { seed: 1, epoch: 0 }), lengths);
  const grouped = epochBatches(1000, 16, { seed: 1, epoch: 0, lengths, labels, groupBatches: 20 });
  assert(random > 1.6 * real, `random ${random} vs ${real}`);
  assert(padded(grouped, lengths) < 1.2 * real, `grouped with labels ${padded(grouped, lengths)} vs ${real}`);
  assertEquals(grouped.flatMap((b) => [...b]).sort((x, y) => x - y), [...Array(1000).keys()]);
  assertEquals(epochBatches(1000, 16, { seed: 1, epoch: 0, lengths, labels, groupBatches: 20 }), grouped);
  assert(
    JSON.stringify(epochBatches(1000, 16, { seed: 1, epoch: 1, lengths, labels })) !==
      JSON.stringify(grouped),
    "each epoch draws its own batches",
  );
});

Deno.test("epochBatches() refuses labels that do not match the features", () => {
  assertThrows(
    () => epochBatches(3, 2, { seed: 1, epoch: 0, lengths: [1, 2, 3], labels: [0, 1] }),
    InvalidArgument,
    "labels has 2 entries for 3 features",
  );
});

import { assert, assertEquals, assertThrows } from "@std/assert";
import { mixSeed, permutation, pythonRound, Rng } from "./rng.ts";

Deno.test("Rng.randint stays within its inclusive bounds and is uniform", () => {
  const rng = Rng.seeded(11);
  for (const [lo, hi] of [[0, 1], [2, 6], [-3, 3], [0, 21127], [0, 3_000_000]] as const) {
    const span = hi - lo + 1;
    const buckets = new Array<number>(Math.min(span, 10)).fill(0);
    const N = 50_000;
    for (let i = 0; i < N; i++) {
      const x = rng.randint(lo, hi);
      assert(Number.isInteger(x) && x >= lo && x <= hi, `${x} outside [${lo}, ${hi}]`);
      buckets[Math.floor(((x - lo) / span) * buckets.length)]!++;
    }
    for (const count of buckets) {
      assert(Math.abs(count / N - 1 / buckets.length) < 0.01, `${lo}..${hi}: ${buckets}`);
    }
  }
  assertThrows(() => rng.randint(3, 2), RangeError, "lo <= hi");
});

Deno.test("Rng state round-trips through JSON and replays the same draws", () => {
  const rng = Rng.seeded(5, 7);
  rng.random();
  const saved = JSON.parse(JSON.stringify(rng.state()));
  const a = Array.from({ length: 10 }, () => rng.randint(0, 1000));
  const b = Rng.fromState(saved);
  assertEquals(Array.from({ length: 10 }, () => b.randint(0, 1000)), a);
  assertThrows(() => Rng.fromState([0, 0, 0, 0]), TypeError, "all zero");
});

Deno.test("seeds mix every part, permutations are permutations, pythonRound rounds halves to even", () => {
  assert(mixSeed(1, 2) !== mixSeed(2, 1));
  assert(mixSeed(1, 2 ** 33) !== mixSeed(1, 2 ** 34));
  const order = permutation(100, Rng.seeded(3));
  assertEquals([...order].sort((x, y) => x - y), [...Array(100).keys()]);
  assertEquals([0.5, 1.5, 2.5, 19.2, 19.5, 20.5].map(pythonRound), [0, 2, 2, 19, 20, 20]);
});

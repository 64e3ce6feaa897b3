import { assert, assertEquals, assertThrows } from "@std/assert";
import { Rng } from "../shards/rng.ts";
import { centerMostWindows, stitchWindows, tokenWindows } from "./windows.ts";

Deno.test("tokenWindows() covers the sequence with full windows overlapping by at least the stride", () => {
  assertEquals(tokenWindows(0, 126), [{ start: 0, end: 0 }]);
  assertEquals(tokenWindows(126, 126), [{ start: 0, end: 126 }]);
  assertEquals(tokenWindows(300, 126), [{ start: 0, end: 126 }, { start: 95, end: 221 }, {
    start: 174,
    end: 300,
  }]);
  assertEquals(tokenWindows(9, 3, 0), [{ start: 0, end: 3 }, { start: 3, end: 6 }, { start: 6, end: 9 }]);
  const rng = Rng.seeded(3);
  for (let i = 0; i < 300; i++) {
    const budget = rng.randint(1, 40), stride = rng.randint(0, budget - 1), length = rng.randint(0, 200);
    const windows = tokenWindows(length, budget, stride);
    const covered = new Uint8Array(length);
    windows.forEach(({ start, end }, w) => {
      assert(end - start === Math.min(budget, length), `window ${w} of ${length}/${budget}/${stride}`);
      covered.fill(1, start, end);
      if (w > 0) assert(windows[w - 1]!.end - start >= stride, `overlap of window ${w}`);
    });
    assert(covered.every((c) => c === 1), `${length}/${budget}/${stride} leaves a token out`);
  }
  assertThrows(() => tokenWindows(10, 0), RangeError, "'budget'");
  assertThrows(() => tokenWindows(10, 4, 4), RangeError, "'stride'");
});

Deno.test("centerMostWindows() gives each token the window where it is farthest from an edge", () => {
  // [0,8) and [5,13) over 13 tokens: the sequence's own ends are no edge, so 5 and 6 stay in the first window
  // (2 and 1 tokens to its right edge vs 0 and 1 to the second's left: the tie goes to the earlier window).
  assertEquals([...centerMostWindows([{ start: 0, end: 8 }, { start: 5, end: 13 }], 13)], [
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    1,
    1,
    1,
    1,
    1,
  ]);
  // A token in three windows takes the middle one, where it has 3 tokens each side.
  const three = [{ start: 0, end: 6 }, { start: 2, end: 9 }, { start: 4, end: 10 }];
  assertEquals(centerMostWindows(three, 10)[5], 1);
  const rng = Rng.seeded(4);
  for (let i = 0; i < 100; i++) {
    const budget = rng.randint(2, 30), length = rng.randint(budget + 1, 150);
    const windows = tokenWindows(length, budget, rng.randint(0, budget - 1));
    const context = (t: number, w: number) => {
      const { start, end } = windows[w]!;
      if (t < start || t >= end) return -1;
      return Math.min(start === 0 ? Infinity : t - start, end === length ? Infinity : end - 1 - t);
    };
    centerMostWindows(windows, length).forEach((w, t) => {
      const best = Math.max(...windows.map((_, v) => context(t, v)));
      assertEquals(context(t, w), best, `token ${t} of ${length} in windows ${JSON.stringify(windows)}`);
    });
  }
  assertThrows(
    () => centerMostWindows([{ start: 0, end: 3 }, { start: 4, end: 6 }], 6),
    RangeError,
    "token 3",
  );
});

Deno.test("stitchWindows() takes each token's row from its center-most window", () => {
  const windows = [{ start: 0, end: 8 }, { start: 5, end: 13 }];
  // Row values say (window, token): 100 * window + token, twice per token (width 2).
  const rows = windows.map(({ start, end }, w) =>
    Float32Array.from({ length: (end - start) * 2 }, (_, i) => 100 * w + start + Math.floor(i / 2))
  );
  const out = stitchWindows(windows, rows, 2, new Float32Array(13 * 2));
  assertEquals(
    [...out],
    Array.from({ length: 26 }, (_, i) => (Math.floor(i / 2) < 7 ? 0 : 100) + Math.floor(i / 2)),
  );
  assertThrows(() => stitchWindows(windows, [rows[0]!], 2, new Float32Array(26)), RangeError, "1 rows");
  assertThrows(
    () => stitchWindows(windows, [rows[0]!, rows[0]!.slice(1)], 2, new Float32Array(26)),
    RangeError,
    "window 1",
  );
});

import { assertAlmostEquals, assertEquals } from "@std/assert";
import { classificationMetrics, makeBatch } from "./evaluate.ts";

Deno.test("classificationMetrics() binary: positive-class P/R/F1, macro F1, confusion rows = true labels", () => {
  // gold 1 1 1 0 0 0 0 ; pred 1 1 0 0 0 1 0
  const r = classificationMetrics([1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 1, 0], ["neg", "pos"]);
  assertEquals(r.confusion, [[3, 1], [1, 2]]);
  assertAlmostEquals(r.metrics.accuracy!, 5 / 7);
  assertAlmostEquals(r.metrics.precision!, 2 / 3);
  assertAlmostEquals(r.metrics.recall!, 2 / 3);
  assertAlmostEquals(r.metrics.f1!, 2 / 3);
  // neg: P 3/4, R 3/4 → F1 0.75; pos: 2/3 → macro (0.75 + 2/3) / 2
  assertAlmostEquals(r.metrics.macro_f1!, (0.75 + 2 / 3) / 2);
  assertAlmostEquals(r.metrics.micro_f1!, 5 / 7);
  assertEquals(r.perLabel["pos/support"], 3);
});

Deno.test("classificationMetrics() multi-class uses macro averages and ignores gold -1", () => {
  const r = classificationMetrics([0, 1, 2, 2, -1], [0, 2, 2, 2, 0], ["a", "b", "c"]);
  assertEquals(r.confusion, [[1, 0, 0], [0, 0, 1], [0, 0, 2]]);
  assertAlmostEquals(r.metrics.accuracy!, 3 / 4);
  // P: a 1, b 0, c 2/3 ; R: a 1, b 0, c 1
  assertAlmostEquals(r.metrics.precision!, (1 + 0 + 2 / 3) / 3);
  assertAlmostEquals(r.metrics.recall!, 2 / 3);
});

Deno.test("makeBatch() fills a short tail with dummy rows of fixed (B, T)", () => {
  const ids = { cls: 2, sep: 3, pad: 0 };
  const text = makeBatch(
    [{ ids: [2, 7, 3], typeIds: [0, 0, 0], label: 1, source: { file: "f", line: 2 } }],
    { task: "classify", numLabels: 2 },
    3,
    5,
    ids,
  );
  // The longest row (3) rounds up to 8, capped at T = 5.
  assertEquals([text.B, text.T], [3, 5]);
  assertEquals([...text.inputIds], [2, 7, 3, 0, 0, 2, 3, 0, 0, 0, 2, 3, 0, 0, 0]);
  assertEquals([...text.attentionMask], [1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0]);
  const short = makeBatch(
    [{ ids: [2, 7, 3], typeIds: [0, 0, 0], label: 1, source: { file: "f", line: 2 } }],
    { task: "classify", numLabels: 2 },
    2,
    64,
    ids,
  );
  assertEquals(short.T, 8, "padded to the longest row rounded to 8, not to 64");
  assertEquals([...text.labels!], [1, 0, 0]);
  const ner = makeBatch([], { task: "ner", numLabels: 3 }, 2, 4, ids);
  assertEquals(ner.T, 4);
  assertEquals([...ner.tokenLabels!], new Array(8).fill(-100));
});

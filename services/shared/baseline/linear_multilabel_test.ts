import { assertAlmostEquals, assertEquals, assertGreater, assertThrows } from "@std/assert";
import { mulberry32 } from "./linear.ts";
import { majorityLabelSet, microF1, trainLinearMultiLabel } from "./linear_multilabel.ts";

/** Texts whose labels are the marker characters they hold: 甲 → A, 乙 → B, both, or neither, amid filler. */
function markedTexts(n: number, seed: number) {
  const random = mulberry32(seed);
  const filler = Array.from({ length: 30 }, (_, i) => String.fromCodePoint(0x4e10 + i));
  return Array.from({ length: n }, (_, i) => {
    const labels = [[], ["A"], ["B"], ["A", "B"]][i % 4]!;
    const chars = Array.from({ length: 6 }, () => filler[Math.floor(random() * filler.length)]!);
    if (labels.includes("A")) chars.splice(Math.floor(random() * 6), 0, "甲");
    if (labels.includes("B")) chars.splice(Math.floor(random() * 6), 0, "乙");
    return { text: chars.join(""), labels };
  });
}

Deno.test("trainLinearMultiLabel() predicts each label on its own, none and both included", () => {
  const model = trainLinearMultiLabel(markedTexts(400, 1), { epochs: 4, buckets: 1 << 14 });
  assertEquals(model.labels, ["A", "B"]);
  const test = markedTexts(80, 2);
  const predicted = test.map((e) => model.predict(e.text).labels);
  assertGreater(microF1(model.labels, test.map((e) => e.labels), predicted), 0.95);
  assertEquals(model.predict("丁丙甲乙丁").labels, ["A", "B"]);
  assertEquals(model.predict("丁丙丁丙").labels, []);
});

Deno.test("trainLinearMultiLabel() rejects no examples, no labels, a label outside the given ones, a bad threshold", () => {
  assertThrows(() => trainLinearMultiLabel([]), RangeError, "no examples");
  assertThrows(
    () => trainLinearMultiLabel([{ text: "好", labels: [] }]),
    RangeError,
    "no example has a label",
  );
  assertThrows(
    () => trainLinearMultiLabel([{ text: "好", labels: ["C"] }], { labels: ["A"] }),
    RangeError,
    `example 0 has label "C"`,
  );
  assertThrows(() => trainLinearMultiLabel([{ text: "好", labels: ["A"] }], { threshold: 1 }), RangeError);
});

Deno.test("majorityLabelSet() answers the most frequent training set, scored by micro-F1", () => {
  const train = [{ labels: ["B", "A"] }, { labels: ["A", "B"] }, { labels: ["A"] }];
  const test = [{ labels: ["A"] }, { labels: ["A", "B"] }, { labels: ["C"] }];
  const result = majorityLabelSet(train, test);
  assertEquals(result.labels, ["A", "B"]);
  // Predicting {A, B} three times: tp 3 (A, A, B), fp 3 (B, A, B), fn 1 (C) → P 1/2, R 3/4, F1 0.6.
  assertAlmostEquals(result.microF1, 0.6, 1e-12);
  assertEquals(majorityLabelSet([{ labels: [] }, { labels: [] }, { labels: ["A"] }], test).microF1, 0);
});

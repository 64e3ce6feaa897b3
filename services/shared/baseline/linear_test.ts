import { assert, assertEquals, assertGreater, assertThrows } from "@std/assert";
import { parse } from "@std/csv";
import { majorityBaseline, mulberry32, pairFeatures, shuffleInPlace, trainLinearBaseline } from "./linear.ts";

Deno.test("trainLinearBaseline() separates labels that depend on characters, not length", () => {
  const examples = [];
  for (let i = 0; i < 200; i++) {
    examples.push({ text: `今天天气很好${i % 7}心情愉快`, label: "pos" });
    examples.push({ text: `今天天气很差${i % 7}心情低落`, label: "neg" });
  }
  const model = trainLinearBaseline(examples, { epochs: 3 });
  assertEquals(model.labels, ["neg", "pos"]);
  assertEquals(model.predict("天气很好，愉快").label, "pos");
  assertEquals(model.predict("天气很差，低落").label, "neg");
});

Deno.test("trainLinearBaseline() is deterministic for a seed", () => {
  const examples = [{ text: "好", label: "a" }, { text: "坏", label: "b" }, { text: "好好", label: "a" }];
  const a = trainLinearBaseline(examples, { seed: 3, buckets: 1024 }).predict("好坏").scores;
  const b = trainLinearBaseline(examples, { seed: 3, buckets: 1024 }).predict("好坏").scores;
  assertEquals(a, b);
});

Deno.test("majorityBaseline() answers the most frequent training label", () => {
  const result = majorityBaseline([{ label: "x" }, { label: "y" }, { label: "y" }], [{ label: "y" }, {
    label: "x",
  }]);
  assertEquals(result, { label: "y", accuracy: 0.5 });
});

const SENTIMENT = new URL("../../../../shared/data/chnsenticorp/train.csv", import.meta.url);
Deno.test({
  name: "trainLinearBaseline() on ChnSentiCorp beats the majority class clearly",
  ignore: !(await Deno.stat(SENTIMENT).then(() => true, () => false)),
  fn: async () => {
    const rows = parse(await Deno.readTextFile(SENTIMENT), { skipFirstRow: true }) as Record<
      string,
      string
    >[];
    const examples = rows.map((r) => ({ text: r.review ?? r.text ?? "", label: r.label! }));
    const train = examples.filter((_, i) => i % 5 !== 0), test = examples.filter((_, i) => i % 5 === 0);
    const model = trainLinearBaseline(train, { epochs: 4 });
    const accuracy = test.filter((e) => model.predict(e.text).label === e.label).length / test.length;
    const majority = majorityBaseline(train, test).accuracy;
    assert(accuracy > 0.8, `accuracy ${accuracy}`);
    assertGreater(accuracy, majority + 0.1);
  },
});

/** Pairs from one pool of characters: label 1 when `b` is a reordering of `a`, 0 when it is drawn afresh. */
function paraphrasePairs(n: number, seed: number) {
  const random = mulberry32(seed);
  const pool = Array.from({ length: 40 }, (_, i) => String.fromCodePoint(0x4e00 + i));
  const draw = (k: number) => Array.from({ length: k }, () => pool[Math.floor(random() * pool.length)]!);
  return Array.from({ length: n }, (_, i) => {
    const a = draw(8);
    const same = i % 2 === 0;
    const b = same ? shuffleInPlace([...a], random) : draw(8);
    return { text: a.join(""), textB: b.join(""), label: same ? "1" : "0" };
  });
}

Deno.test("trainLinearBaseline() on pairs learns from what the two texts share", () => {
  // Each side alone is a uniform draw from the same pool in both classes: only the pairing tells them apart.
  const model = trainLinearBaseline(paraphrasePairs(600, 1), { epochs: 4, buckets: 1 << 14 });
  const test = paraphrasePairs(200, 2);
  const accuracy = test.filter((e) => model.predict(e.text, e.textB).label === e.label).length / test.length;
  assertGreater(accuracy, 0.9);
});

Deno.test("pairFeatures() keeps the sides apart: swapping them changes the features, a copy shares every n-gram", () => {
  const ab = pairFeatures("今天好", "明天坏", 1 << 16), ba = pairFeatures("明天坏", "今天好", 1 << 16);
  assert([...ab.keys()].sort().join() !== [...ba.keys()].sort().join());
  const copy = pairFeatures("今天好", "今天好", 1 << 16);
  assertGreater(copy.size, ab.size, "a copy adds shared unigrams and bigrams");
});

Deno.test("trainLinearBaseline() refuses texts mixed with pairs, and a pair model asked about a text", () => {
  assertThrows(
    () => trainLinearBaseline([{ text: "好", label: "1" }, { text: "好", textB: "坏", label: "0" }]),
    RangeError,
    "example 1 is not",
  );
  const model = trainLinearBaseline([{ text: "好", textB: "好", label: "1" }], { buckets: 64 });
  assertThrows(() => model.predict("好"), RangeError, "trained on pairs");
});

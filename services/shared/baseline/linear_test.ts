import { assert, assertEquals, assertGreater } from "@std/assert";
import { parse } from "@std/csv";
import { majorityBaseline, trainLinearBaseline } from "./linear.ts";

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

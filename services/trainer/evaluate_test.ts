import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import type { Batch, Engine, ForwardOutput, HeadSpec } from "../shared/engine/engine.ts";
import {
  encodeNerExamples,
  LabelSet,
  type NerExample,
  stitchWindows,
  type TextFeature,
} from "../shared/data/mod.ts";
import { viterbiDecode } from "../shared/model/crf.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import {
  classificationMetrics,
  evaluateFeatures,
  type ExampleOutcome,
  makeBatch,
  mistakesOf,
} from "./evaluate.ts";
import { tinyVocabText } from "./testing.ts";

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

/**
 * A stand-in NER model that tags each character by a fixed table, except the first and last token of every
 * row, which it gets wrong (O): right only where a token has context on both sides.
 */
function edgeBlindEngine(head: HeadSpec, tagOfId: (id: number) => number): Engine {
  const K = head.numLabels!;
  return {
    head,
    forward(batch: Batch): ForwardOutput {
      const { B, T } = batch;
      const logits = new Float32Array(B * T * K);
      const paths = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        const n = batch.attentionMask.subarray(b * T, (b + 1) * T).reduce((a, m) => a + m, 0);
        for (let p = 1; p < n - 1; p++) {
          const tag = p === 1 || p === n - 2 ? 0 : tagOfId(batch.inputIds[b * T + p]!);
          logits[(b * T + p) * K + tag] = 8;
          paths[b * T + p] = tag;
        }
      }
      return head.crf ? { logits, paths } : { logits };
    },
    // CRF tensors that leave the emissions in charge, for decoding a windowed sentence as one chain
    getWeights: () => crfWeights(K, () => 0),
  } as unknown as Engine;
}

function crfWeights(K: number, transition: (from: number, to: number) => number) {
  const tensor = (shape: number[], data: Float32Array) => ({ shape, data });
  return new Map([
    ["crf.start_transitions", tensor([K], new Float32Array(K))],
    ["crf.end_transitions", tensor([K], new Float32Array(K))],
    [
      "crf.transitions",
      tensor([K, K], Float32Array.from({ length: K * K }, (_, i) => transition(Math.floor(i / K), i % K))),
    ],
  ]);
}

/**
 * A stand-in NER + CRF model whose transitions reward staying on a tag (+1, a switch -1): tokens of `anchor`
 * pull hard (+5) to tag 1, every other token leans a little (+0.01) to O. Over 80 tokens with two anchors one pass
 * stays on tag 1 throughout (each switch costs more than the lean of all the O-leaning tokens gains); a window
 * between the anchors sees none and says O.
 */
function chainEngine(head: HeadSpec, vocabSize: number, anchor: number): Engine {
  const K = head.numLabels!;
  const emission = Array.from({ length: vocabSize }, (_, id) => {
    const row = new Float32Array(K);
    if (id === anchor) row[1] = 5;
    else row[0] = 0.01;
    return row;
  });
  const weights = crfWeights(K, (from, to) => (from === to ? 1 : -1));
  const [start, end, transitions] = [...weights.values()].map((t) => t.data);
  return {
    head,
    forward(batch: Batch): ForwardOutput {
      const { B, T } = batch;
      const logits = new Float32Array(B * T * K);
      for (let i = 0; i < B * T; i++) {
        if (batch.attentionMask[i]) logits.set(emission[batch.inputIds[i]!]!, i * K);
      }
      return {
        logits,
        paths: viterbiDecode(logits, batch.attentionMask, B, T, K, start!, end!, transitions!),
      };
    },
    getWeights: () => weights,
  } as unknown as Engine;
}

Deno.test("evaluateFeatures() decodes a long sentence's windows with the CRF as one chain, as one pass would", () => {
  const labels = new LabelSet(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]);
  const tokenizer = WordPieceTokenizer.fromVocabText(tinyVocabText());
  const head: HeadSpec = { task: "ner", numLabels: labels.size, crf: true };
  const anchor = String.fromCodePoint(0x4e20);
  const engine = chainEngine(head, tokenizer.idToToken.length, tokenizer.convertTokensToIds([anchor])[0]!);
  const ids = { cls: tokenizer.clsId, sep: tokenizer.sepId, pad: tokenizer.padId };
  const units = Array.from(
    { length: 80 },
    (_, i) => i === 10 || i === 61 ? anchor : String.fromCodePoint(0x4e30 + (i % 9)),
  );
  // Gold: what the model tags in one pass over the whole sentence.
  const placeholder = { units, tags: units.map(() => "O"), source: { file: "dev.bio", line: 1 } };
  const [whole] = encodeNerExamples([placeholder], tokenizer, labels, { maxLength: 128 }).features;
  const onePass = engine.forward(makeBatch([whole!], head, 1, 128, ids)).paths!;
  const tags = units.map((_, t) => labels.labels[onePass[t + 1]!]!);
  assertEquals(tags, units.map(() => "B-PER"), "one pass stays on the anchors' tag throughout");
  const { features } = encodeNerExamples([{ ...placeholder, tags }], tokenizer, labels, { maxLength: 16 });
  assert(features.length > 5, "the sentence runs as windows");
  const result = evaluateFeatures(engine, head, features, labels.labels, { B: 4, T: 16, ids });
  assertEquals([result.metrics.precision, result.metrics.recall], [1, 1]);
  // Each window's own path, stitched (the chain cut at every seam), disagrees with the one pass somewhere.
  const own = features.map((f) =>
    engine.forward(makeBatch([f], head, 1, 16, ids)).paths!.slice(1, f.ids.length - 1)
  );
  const spans = features.map((f) => ({ start: f.window!.start, end: f.window!.end }));
  const stitched = stitchWindows(spans, own, 1, new Int32Array(units.length));
  assert(units.some((_, t) => stitched[t] !== onePass[t + 1]));
});

Deno.test("evaluateFeatures() scores a long NER sentence whole, each token from the window where it has most context", () => {
  const labels = new LabelSet(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]);
  const tokenizer = WordPieceTokenizer.fromVocabText(tinyVocabText());
  // Characters 0..3 are B-PER, I-PER, B-LOC, I-LOC wherever they stand; the rest are O.
  const entityChar = (tag: string) => String.fromCodePoint(0x4e00 + labels.labels.indexOf(tag) - 1);
  const sentence = (length: number, entities: Array<[string, number]>, line: number): NerExample => {
    const units = Array.from({ length }, (_, i) => String.fromCodePoint(0x4e10 + (i % 60)));
    const tags = units.map(() => "O");
    for (const [type, at] of entities) {
      [tags[at], tags[at + 1]] = [`B-${type}`, `I-${type}`];
      [units[at], units[at + 1]] = [entityChar(`B-${type}`), entityChar(`I-${type}`)];
    }
    return { units, tags, source: { file: "dev.bio", line } };
  };
  // At max_length 16 the 40 tokens take windows [0,14) [11,25) [22,36) [26,40). Token 13 ends the first
  // window and 26 starts the last: read from there they would be wrong, and three entities lie past token 14.
  const long = sentence(40, [["PER", 12], ["LOC", 23], ["PER", 26], ["LOC", 37]], 5);
  const short = sentence(6, [["PER", 2]], 1);
  const { features } = encodeNerExamples([short, long], tokenizer, labels, { maxLength: 16 });
  assertEquals(features.length, 5);
  const ids = { cls: tokenizer.clsId, sep: tokenizer.sepId, pad: tokenizer.padId };
  const tagOfId = (id: number) => {
    const k = id - tokenizer.convertTokensToIds([entityChar("B-PER")])[0]! + 1;
    return k >= 1 && k < labels.size ? k : 0;
  };
  for (const crf of [false, true]) {
    const head: HeadSpec = { task: "ner", numLabels: labels.size, ...(crf ? { crf: true } : {}) };
    const result = evaluateFeatures(edgeBlindEngine(head, tagOfId), head, features, labels.labels, {
      B: 3,
      T: 16,
      ids,
    });
    assertEquals(result.examples, 2, "sentences, not windows");
    assertEquals([result.perLabel["PER/support"], result.perLabel["LOC/support"]], [3, 2], `crf=${crf}`);
    assertEquals([result.metrics.precision, result.metrics.recall], [1, 1], `crf=${crf}`);
  }
  const missing = features.filter((f) => f.window?.start !== 11);
  assertThrows(
    () =>
      evaluateFeatures(
        edgeBlindEngine({ task: "ner", numLabels: 5 }, tagOfId),
        { task: "ner", numLabels: 5 },
        missing,
        labels.labels,
        { B: 3, T: 16, ids },
      ),
    RangeError,
    "3 of its windows",
  );
});

Deno.test("evaluateFeatures() batches rows of similar length: padding follows each batch's own longest row", () => {
  const head: HeadSpec = { task: "classify", numLabels: 2 };
  const seen: number[] = [];
  const engine = {
    head,
    forward(batch: Batch): ForwardOutput {
      seen.push(batch.T);
      // Predicts label 1 for rows longer than 10 tokens, whatever their position in the batch.
      const logits = new Float32Array(batch.B * 2);
      for (let b = 0; b < batch.B; b++) {
        const n = batch.attentionMask.subarray(b * batch.T, (b + 1) * batch.T).reduce((a, m) => a + m, 0);
        logits[b * 2 + (n > 10 ? 1 : 0)] = 5;
      }
      return { logits };
    },
  } as unknown as Engine;
  const row = (n: number, label: number) => ({
    ids: [2, ...new Array(n - 2).fill(7), 3],
    typeIds: new Array(n).fill(0),
    label,
    source: { file: "f", line: n },
  });
  // Long and short rows alternate: in stored order every batch would pad to 104.
  const features = [row(100, 1), row(5, 0), row(97, 1), row(6, 0), row(99, 0), row(4, 0)];
  const result = evaluateFeatures(engine, head, features, ["a", "b"], {
    B: 2,
    T: 128,
    ids: { cls: 2, sep: 3, pad: 0 },
  });
  assertEquals(seen, [104, 104, 8]);
  assertEquals(result.confusion, [[3, 1], [0, 2]]);
  assertEquals(result.examples, 6);
});

Deno.test("evaluateFeatures() reports each example once with its probability; mistakesOf() lists the wrong ones, most confident first", () => {
  const head: HeadSpec = { task: "classify", numLabels: 2 };
  // The logit of "pos" is the row's length minus 8: short rows lean "neg", long ones "pos", more so the further.
  const engine = {
    head,
    forward(batch: Batch): ForwardOutput {
      const logits = new Float32Array(batch.B * 2);
      for (let b = 0; b < batch.B; b++) {
        const n = batch.attentionMask.subarray(b * batch.T, (b + 1) * batch.T).reduce((a, m) => a + m, 0);
        logits[b * 2 + 1] = n - 8;
      }
      return { logits };
    },
  } as unknown as Engine;
  const examples = [
    { text: "long and right", labels: ["pos"], length: 12 },
    { text: "short and wrong", labels: ["pos"], length: 6 },
    { text: "long and wrong", labels: ["neg"], length: 11 },
    { text: "short and right", labels: ["neg"], length: 4 },
    { text: "barely wrong", labels: ["neg"], length: 9 },
  ].map((e, i) => ({ ...e, source: { file: "eval.csv", line: i + 2 } }));
  const feature = (length: number, label: number, source: { file: string; line: number }) => ({
    ids: [2, ...new Array(length - 2).fill(7), 3],
    typeIds: new Array(length).fill(0),
    label,
    source,
  });
  const features: TextFeature[] = examples.map((e) =>
    feature(e.length, e.labels[0] === "pos" ? 1 : 0, e.source)
  );
  // A text read as two windows (logits 4 and 2): one outcome, on the mean of its windows' logits.
  const windowed = { file: "eval.csv", line: 7 };
  features.push(
    { ...feature(12, 1, windowed), window: { example: 5, start: 0, end: 10, count: 2 } },
    { ...feature(10, 1, windowed), window: { example: 5, start: 8, end: 16, count: 2 } },
  );
  const outcomes: ExampleOutcome[] = [];
  const result = evaluateFeatures(engine, head, features, ["neg", "pos"], {
    B: 2,
    T: 16,
    ids: { cls: 2, sep: 3, pad: 0 },
    onExample: (outcome) => outcomes.push(outcome),
  });
  assertEquals(outcomes.map((o) => o.source.line).sort(), [2, 3, 4, 5, 6, 7]);
  const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
  const byLine = new Map(outcomes.map((o) => [o.source.line, o]));
  assertAlmostEquals(byLine.get(7)!.confidence!, sigmoid(3), 1e-6);
  assertAlmostEquals(byLine.get(2)!.confidence!, sigmoid(4), 1e-6);
  assertEquals([byLine.get(3)!.gold, byLine.get(3)!.predicted], [["pos"], ["neg"]]);
  assertAlmostEquals(byLine.get(3)!.confidence!, sigmoid(2), 1e-6);
  const mistakes = mistakesOf("classify", examples, outcomes);
  assertEquals(mistakes.length, Math.round(6 * (1 - result.metrics.accuracy!)));
  assertEquals(mistakes.map((m) => m.text), ["long and wrong", "short and wrong", "barely wrong"]);
  assertEquals(mistakes.map((m) => m.line), [4, 3, 6]);
  assert(
    mistakes[0]!.confidence > mistakes[1]!.confidence && mistakes[1]!.confidence > mistakes[2]!.confidence,
  );
});

Deno.test("mistakesOf() compares label sets for multilabel and entity lists for ner, in file order", () => {
  const src = (line: number) => ({ file: "dev", line });
  const multi = mistakesOf("multilabel", [
    { text: "a", labels: ["x", "y"], source: src(1) },
    { text: "b", labels: ["y"], source: src(2) },
  ], [
    { source: src(2), gold: ["y"], predicted: ["x", "y"] },
    { source: src(1), gold: ["x", "y"], predicted: ["y", "x"] },
  ]);
  assertEquals(multi.map((m) => [m.line, m.text, m.predicted]), [[2, "b", ["x", "y"]]]);
  const sentence = (line: number) => ({ units: [..."张三在北京"], tags: [], source: src(line) });
  const ner = mistakesOf("ner", [sentence(9), sentence(3)], [
    // the same entities: an I- opening an entity reads as B- (seqeval), so not a mistake
    { source: src(3), gold: ["B-PER", "I-PER", "O", "O", "O"], predicted: ["I-PER", "I-PER", "O", "O", "O"] },
    {
      source: src(9),
      gold: ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"],
      predicted: ["B-PER", "O", "O", "B-LOC", "I-LOC"],
    },
  ]);
  assertEquals(ner, [{
    line: 9,
    text: "张三在北京",
    textB: "",
    gold: ["PER 张三 [0,2)", "LOC 北京 [3,5)"],
    predicted: ["PER 张 [0,1)", "LOC 北京 [3,5)"],
    confidence: 0,
  }]);
  // A unit without a tag (dropped by the tokenizer): spans over the scored units, no text that could be shifted.
  const dropped = mistakesOf("ner", [{ units: [..."张\u0000三"], tags: [], source: src(4) }], [
    { source: src(4), gold: ["B-PER", "I-PER"], predicted: ["O", "B-PER"] },
  ]);
  assertEquals([dropped[0]!.gold, dropped[0]!.predicted], [["PER [0,2)"], ["PER [1,2)"]]);
});

import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import { WordPieceTokenizer } from "../wordpiece/mod.ts";
import { Rng } from "../shards/rng.ts";
import {
  accuracy,
  alignedTagSequences,
  droppedSpans,
  encodeNerExamples,
  encodeTextExamples,
  entityScores,
  epochBatches,
  getEntities,
  LabelSet,
  multiLabelScores,
  nerBatch,
  type NerExample,
  parseCsv,
  parseNerExamples,
  parseTextExamples,
  readLabelledFile,
  stitchWindows,
  textBatch,
  type TextExample,
  trainEvalSplit,
} from "./mod.ts";

const SHARED = new URL("../../../../shared/data/", import.meta.url);
const hasShared = (() => {
  try {
    Deno.statSync(new URL("chnsenticorp/train.csv", SHARED));
    return true;
  } catch {
    return false;
  }
})();

/** A small vocab with Chinese characters, a few Latin pieces and digits. */
const TINY_VOCAB = [
  "[PAD]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  "北",
  "京",
  "在",
  "我",
  "爱",
  "苹",
  "果",
  "公",
  "司",
  "apple",
  "ip",
  "##hone",
  "199",
  "##7",
  "年",
  "，",
  "。",
  "!",
  "好",
  "不",
  "hello",
  "world",
].join("\n");
const tiny = () => WordPieceTokenizer.fromVocabText(TINY_VOCAB);

Deno.test("parseCsv keeps quoted commas, doubled quotes and newlines, and numbers records by their first line", () => {
  const records = parseCsv('label,text\n1,"a, ""b""\nc"\r\n\n0,plain\n', "x.csv");
  assertEquals(records, [
    { fields: ["label", "text"], line: 1 },
    { fields: ["1", 'a, "b"\nc'], line: 2 },
    { fields: ["0", "plain"], line: 5 },
  ]);
});

Deno.test("CSV readers accept label,text aliases and pairs; malformed rows name file and line", () => {
  const single = parseTextExamples("label,review\n1,好\n0,不好\n", { task: "classify", file: "r.csv" });
  assertEquals(single.map((e) => [e.labels, e.text, e.source.line]), [[["1"], "好", 2], [["0"], "不好", 3]]);
  const pairs = parseTextExamples("label,sentence1,sentence2\nyes,a,b\n", { task: "pair", file: "p.csv" });
  assertEquals(pairs[0], { text: "a", textB: "b", labels: ["yes"], source: { file: "p.csv", line: 2 } });
  const multi = parseTextExamples("label,text\na|b|a,x\n,y\n", { task: "multilabel", file: "m.csv" });
  assertEquals(multi.map((e) => e.labels), [["a", "b"], []]);
  const bad = (content: string, task: "classify" | "pair" | "multilabel", message: string) =>
    assertThrows(() => parseTextExamples(content, { task, file: "bad.csv" }), InvalidArgument, message);
  bad("label,text\n1,ok\n2\n", "classify", "bad.csv:3: 1 fields, the header has 2");
  bad("label,text\n1,ok\n,empty label\n", "classify", "bad.csv:3: label is empty");
  bad("label,text\n1,\n", "classify", "bad.csv:2: text is empty");
  bad("category,words\n1,x\n", "classify", "bad.csv:1: header must name a label column");
  bad('label,text\n1,"never closed\n', "classify", "bad.csv:2: quoted field is never closed");
  bad("label,text\n1,a\n", "pair", "task pair needs a second text");
  bad("label,text_a,text_b\n1,a,b\n", "classify", "use task pair");
  bad("label,text\na||b,x\n", "multilabel", "bad.csv:2: label has an empty entry");
});

Deno.test("JSONL readers take text/label, pairs and label lists; malformed lines name file and line", () => {
  const content = '{"text":"好","label":1}\n\n{"text":"不好","label":"0"}\n';
  assertEquals(
    parseTextExamples(content, { task: "classify", file: "a.jsonl" }).map((
      e,
    ) => [e.labels[0], e.source.line]),
    [
      ["1", 1],
      ["0", 3],
    ],
  );
  const multi = parseTextExamples('{"text":"x","labels":["b","a"]}\n', {
    task: "multilabel",
    file: "m.jsonl",
  });
  assertEquals(multi[0]!.labels, ["b", "a"]);
  const pair = parseTextExamples('{"text_a":"x","text_b":"y","label":0}\n', {
    task: "pair",
    file: "p.jsonl",
  });
  assertEquals([pair[0]!.text, pair[0]!.textB], ["x", "y"]);
  const bad = (content: string, message: string) =>
    assertThrows(
      () => parseTextExamples(content, { task: "classify", file: "b.jsonl" }),
      InvalidArgument,
      message,
    );
  bad('{"text":"x","label":1}\n{"text": oops}\n', "b.jsonl:2: not valid JSON");
  bad('{"text":"x"}\n', "b.jsonl:1: no label field");
  bad('{"label":1}\n', "b.jsonl:1: no text field");
  bad("[1,2]\n", "b.jsonl:1: each line must be a JSON object");
  bad('{"text":"x","label":["a","b"]}\n', "only task multilabel takes several labels");
  bad('{"text":"x","label":{"a":1}}\n', "label must be a string or a number");
});

Deno.test("BIO reader splits sentences on blank lines and refuses bad tags with the line number", () => {
  const examples = parseNerExamples("我 O\n在 O\n北 B-LOC\n京 I-LOC\n\n\n好 O\n", { file: "t.bio" });
  assertEquals(examples.map((e) => [e.units.join(""), e.tags, e.source.line]), [
    ["我在北京", ["O", "O", "B-LOC", "I-LOC"], 1],
    ["好", ["O"], 7],
  ]);
  assertThrows(
    () => parseNerExamples("我 O\n在 X-LOC\n", { file: "t.bio" }),
    InvalidArgument,
    "t.bio:2: tag must be",
  );
  assertThrows(
    () => parseNerExamples("我 O\n在\n", { file: "t.bio" }),
    InvalidArgument,
    't.bio:2: expected "token TAG"',
  );
});

Deno.test("CLUENER reader turns inclusive spans into BIO tags and checks the spans", () => {
  const line = JSON.stringify({
    text: "我爱北京苹果公司",
    label: { location: { "北京": [[2, 3]] }, company: { "苹果公司": [[4, 7]] } },
  });
  const [example] = parseNerExamples(line + "\n", { file: "c.json" });
  assertEquals(example!.tags, [
    "O",
    "O",
    "B-location",
    "I-location",
    "B-company",
    "I-company",
    "I-company",
    "I-company",
  ]);
  const bad = (label: unknown, message: string) =>
    assertThrows(
      () =>
        parseNerExamples(`{"text":"ok","label":{}}\n${JSON.stringify({ text: "我爱北京", label })}\n`, {
          file: "c.json",
          format: "cluener",
          overlaps: "error",
        }),
      InvalidArgument,
      message,
    );
  bad({ location: { "北京": [[2, 2]] } }, 'c.json:2: label.location span [2, 2] covers "北", not "北京"');
  bad(
    { location: { "北京": [[2, 9]] } },
    "c.json:2: label.location.北京 span [2,9] is not [start, end] inside",
  );
  bad({ a: { "北京": [[2, 3]] }, b: { "京": [[3, 3]] } }, "overlaps another entity at character 3");
  assertThrows(
    () => parseNerExamples('{"text":"ok","label":{}}\n', { file: "c.json", overlaps: "inner" as "outer" }),
    InvalidArgument,
    "overlaps must be one of outer, first, error",
  );
  assertThrows(
    () => parseNerExamples('{"text":"ok"}\n', { file: "c.json" }),
    InvalidArgument,
    "c.json:1: label is missing",
  );
});

Deno.test("CLUENER nested and duplicate spans: outer keeps the longest, first keeps file order, each counted", () => {
  // CLUENER's own training data nests a company inside a book title; the same span may also come twice.
  const text = "读《招商银行年报》";
  const label = {
    company: { "招商银行": [[2, 5]] },
    book: { "《招商银行年报》": [[1, 8]] },
    name: { "读": [[0, 0], [0, 0]] },
  };
  const read = (overlaps?: "outer" | "first") =>
    parseNerExamples(JSON.stringify({ text, label }) + "\n", {
      file: "c.json",
      ...(overlaps ? { overlaps } : {}),
    })[0]!;
  const outer = read();
  assertEquals(outer.tags, ["B-name", "B-book", ...new Array(7).fill("I-book")]);
  assertEquals(outer.droppedSpans, 2, "the nested company and the duplicate 读");
  const first = read("first");
  assertEquals(first.tags, [
    "B-name",
    "O",
    "B-company",
    "I-company",
    "I-company",
    "I-company",
    "O",
    "O",
    "O",
  ]);
  assertEquals(first.droppedSpans, 2, "the book across the company, and the duplicate 读");
  assertEquals(droppedSpans([outer, first, { ...outer, droppedSpans: undefined }]), 4);
  const clean = parseNerExamples(
    JSON.stringify({ text: "我爱北京", label: { loc: { "北京": [[2, 3]] } } }) + "\n",
    {
      file: "c.json",
    },
  )[0]!;
  assertEquals(clean.droppedSpans, undefined);
});

Deno.test("LabelSet orders classes numerically or alphabetically, and NER tags O then B-/I- per type", () => {
  const ex = (labels: string[]): TextExample => ({ text: "x", labels, source: { file: "f", line: 1 } });
  assertEquals(LabelSet.ofTextExamples([ex(["10"]), ex(["2"]), ex(["0"])]).labels, ["0", "2", "10"]);
  assertEquals(LabelSet.ofTextExamples([ex(["pos"]), ex(["neg", "mid"])]).labels, ["mid", "neg", "pos"]);
  const ner: NerExample = {
    units: ["a", "b", "c"],
    tags: ["B-PER", "I-PER", "B-LOC"],
    source: { file: "f", line: 1 },
  };
  const tags = LabelSet.ofNerExamples([ner]);
  assertEquals(tags.labels, ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]);
  assertEquals(tags.id2label()["1"], "B-LOC");
  assertThrows(
    () => tags.index("B-ORG", { file: "dev.bio", line: 7 }),
    InvalidArgument,
    'dev.bio:7: label "B-ORG"',
  );
});

Deno.test("encodeNerExamples keeps each Chinese character's tag and puts a Latin word's tag on its first piece", () => {
  const tokenizer = tiny();
  // 我 爱 i p h o n e 在 1 9 9 7 年 : "iphone" and "1997" are one word each (two pieces).
  const units = [..."我爱iphone在1997年"];
  const tags = [
    "O",
    "O",
    "B-PRO",
    "I-PRO",
    "I-PRO",
    "I-PRO",
    "I-PRO",
    "I-PRO",
    "O",
    "B-T",
    "I-T",
    "I-T",
    "I-T",
    "I-T",
  ];
  const example: NerExample = { units, tags, source: { file: "x.bio", line: 1 } };
  const labels = LabelSet.ofNerExamples([example]);
  const { features, report } = encodeNerExamples([example], tokenizer, labels, { maxLength: 16 });
  const [feature] = features;
  assertEquals(tokenizer.convertIdsToTokens(feature!.ids), [
    "[CLS]",
    "我",
    "爱",
    "ip",
    "##hone",
    "在",
    "199",
    "##7",
    "年",
    "[SEP]",
  ]);
  const named = feature!.tokenLabels.map((l) => (l < 0 ? null : labels.labels[l]));
  assertEquals(named, [null, "O", "O", "B-PRO", null, "O", "B-T", null, "I-T", null]);
  assertEquals([report.truncated, report.entities, report.entitiesLost, report.windowed], [0, 2, 0, 0]);
  assertEquals(feature!.window, undefined);
  // 8 tokens in windows of 4 overlapping by at least 1: nothing is cut, so no entity is lost.
  const short = encodeNerExamples([example], tokenizer, labels, { maxLength: 6 });
  assertEquals(short.features.map((f) => f.window), [
    { example: 0, start: 0, end: 4, count: 3 },
    { example: 0, start: 3, end: 7, count: 3 },
    { example: 0, start: 4, end: 8, count: 3 },
  ]);
  assertEquals(tokenizer.convertIdsToTokens(short.features[1]!.ids), [
    "[CLS]",
    "##hone",
    "在",
    "199",
    "##7",
    "[SEP]",
  ]);
  assertEquals(short.features[1]!.tokenLabels, [-100, ...feature!.tokenLabels.slice(4, 8), -100]);
  const { truncated, tokensTruncated, entitiesLost, windowed, windows, samples } = short.report;
  assertEquals({ truncated, tokensTruncated, entitiesLost, windowed, windows, samples }, {
    truncated: 0,
    tokensTruncated: 0,
    entitiesLost: 0,
    windowed: 1,
    windows: 3,
    samples: [],
  });
  assertThrows(
    () => encodeNerExamples([example], tokenizer, labels, { maxLength: 2 }),
    RangeError,
    "maxLength",
  );
});

Deno.test("encodeNerExamples cuts a 300-character sentence into windows that hold every token and label exactly", () => {
  // One character a token, each its own id, so a window's ids say exactly which characters it holds.
  const chars = Array.from({ length: 300 }, (_, i) => String.fromCodePoint(0x4e00 + i));
  const tokenizer = WordPieceTokenizer.fromVocabText(
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ...chars].join("\n"),
  );
  const tags = chars.map(() => "O");
  const entity = (type: string, start: number, end: number) =>
    tags.fill(`I-${type}`, start + 1, end).splice(start, 1, `B-${type}`);
  entity("PER", 0, 3); // the first characters
  entity("ORG", 118, 132); // across the end of the first window (126)
  entity("LOC", 296, 300); // the last characters
  const long: NerExample = { units: chars, tags, source: { file: "long.bio", line: 3 } };
  const shortOne: NerExample = {
    units: chars.slice(0, 5),
    tags: tags.slice(0, 5),
    source: { file: "long.bio", line: 1 },
  };
  const labels = LabelSet.ofNerExamples([long]);
  const { features, report } = encodeNerExamples([shortOne, long], tokenizer, labels, { maxLength: 128 });
  assertEquals(features[0]!.window, undefined);
  const windows = features.slice(1);
  // Windows of 126 overlapping by 31 (a quarter), the last one ending at the sentence's end.
  assertEquals(windows.map((f) => f.window), [
    { example: 1, start: 0, end: 126, count: 3 },
    { example: 1, start: 95, end: 221, count: 3 },
    { example: 1, start: 174, end: 300, count: 3 },
  ]);
  const whole = encodeNerExamples([long], tokenizer, labels, { maxLength: 302 }).features[0]!;
  for (const f of windows) {
    const { start, end } = f.window!;
    assert(f.ids.length <= 128);
    assertEquals(f.ids, [tokenizer.clsId, ...whole.ids.slice(1 + start, 1 + end), tokenizer.sepId]);
    assertEquals(f.tokenLabels, [-100, ...whole.tokenLabels.slice(1 + start, 1 + end), -100]);
  }
  // Stitched back, the windows' labels are the sentence's, entities included.
  const spans = windows.map((f) => f.window!);
  const stitched = stitchWindows(
    spans,
    windows.map((f) => f.tokenLabels.slice(1, -1)),
    1,
    new Int32Array(300),
  );
  assertEquals([...stitched].map((l) => labels.labels[l]), tags);
  assertEquals(getEntities([...stitched].map((l) => labels.labels[l]!)), [
    ["PER", 0, 2],
    ["ORG", 118, 131],
    ["LOC", 296, 299],
  ]);
  const { truncated, tokensTruncated, entities, entitiesLost, windowed } = report;
  assertEquals({ truncated, tokensTruncated, entities, entitiesLost, windowed, windows: report.windows }, {
    truncated: 0,
    tokensTruncated: 0,
    entities: 4, // the short sentence's PER too
    entitiesLost: 0,
    windowed: 1,
    windows: 4,
  });
});

Deno.test("encodeTextExamples truncates pairs longest-first to maxLength and reports it", () => {
  const tokenizer = tiny();
  const examples: TextExample[] = [
    { text: "我爱北京", textB: "好", labels: ["1"], source: { file: "p.csv", line: 2 } },
    { text: "好", textB: "不好", labels: ["0"], source: { file: "p.csv", line: 3 } },
  ];
  const labels = LabelSet.ofTextExamples(examples);
  const { features, report } = encodeTextExamples(examples, tokenizer, labels, {
    task: "pair",
    maxLength: 6,
  });
  assertEquals(tokenizer.convertIdsToTokens(features[0]!.ids), ["[CLS]", "我", "爱", "[SEP]", "好", "[SEP]"]);
  assertEquals(features[0]!.typeIds, [0, 0, 0, 0, 1, 1]);
  assertEquals(features.map((f) => f.label), [1, 0]);
  assertEquals([report.truncated, report.tokensTruncated, report.samples], [1, 2, ["p.csv:2"]]);
  const batch = textBatch(features, 7, tokenizer.padId);
  assertEquals([batch.B, batch.T, batch.inputIds.length], [2, 7, 14]);
  assertEquals(Array.from(batch.labels!), [1, 0]);
  assertEquals(Array.from(batch.attentionMask.subarray(7, 14)), [1, 1, 1, 1, 1, 1, 0]);
  assertEquals(Array.from(batch.tokenTypeIds.subarray(7, 14)), [0, 0, 0, 1, 1, 1, 0]);
});

Deno.test("encodeTextExamples with windows reads a long text as overlapping windows, each with its label", () => {
  const tokenizer = tiny();
  const examples: TextExample[] = [
    { text: "我爱北京好我爱北京好我", labels: ["1"], source: { file: "w.csv", line: 2 } }, // 11 tokens
    { text: "好", labels: ["0"], source: { file: "w.csv", line: 3 } },
  ];
  const labels = LabelSet.ofTextExamples(examples);
  const { features, report } = encodeTextExamples(examples, tokenizer, labels, {
    task: "classify",
    maxLength: 6,
    windows: true,
  });
  // Budget 4, 3 apart: [0,4) [3,7) [6,10) [7,11); then the short text as it is.
  assertEquals(features.map((f) => tokenizer.convertIdsToTokens(f.ids).join("")), [
    "[CLS]我爱北京[SEP]",
    "[CLS]京好我爱[SEP]",
    "[CLS]爱北京好[SEP]",
    "[CLS]北京好我[SEP]",
    "[CLS]好[SEP]",
  ]);
  assertEquals(features.map((f) => f.label), [1, 1, 1, 1, 0]);
  assertEquals(features.map((f) => f.window?.start), [0, 3, 6, 7, undefined]);
  assertEquals(features[0]!.window, { example: 0, start: 0, end: 4, count: 4 });
  assertEquals(features.every((f) => f.typeIds.every((t) => t === 0) && f.ids.length <= 6), true);
  assertEquals([report.truncated, report.windowed, report.windows], [0, 1, 5]);
  assertThrows(
    () => encodeTextExamples(examples, tokenizer, labels, { task: "pair", maxLength: 6, windows: true }),
    RangeError,
    "only classify and multilabel",
  );
});

Deno.test("multilabel features and batches carry one 0/1 per class", () => {
  const examples = parseTextExamples("label,text\na|c,我\n,好\n", {
    task: "multilabel",
    file: "m.csv",
  }) as TextExample[];
  const labels = new LabelSet(["a", "b", "c"]);
  const { features } = encodeTextExamples(examples, tiny(), labels, { task: "multilabel", maxLength: 8 });
  const batch = textBatch(features, 8, 0);
  assertEquals(Array.from(batch.multiLabels!), [1, 0, 1, 0, 0, 0]);
  assertEquals(batch.labels, undefined);
});

Deno.test("getEntities and entityScores agree with seqeval", () => {
  assertEquals(getEntities(["B-PER", "I-PER", "O", "B-LOC"]), [["PER", 0, 1], ["LOC", 3, 3]]);
  assertEquals(getEntities(["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]), [["PER", 0, 1], ["LOC", 3, 3], [
    "LOC",
    4,
    4,
  ]]);
  assertEquals(getEntities(["B-PER", "I-LOC", "B-LOC", "B-LOC"]), [["PER", 0, 0], ["LOC", 1, 1], [
    "LOC",
    2,
    2,
  ], ["LOC", 3, 3]]);
  assertEquals(getEntities([["B-A"], ["I-A"]]), [["A", 0, 0], ["A", 2, 2]]);
  // The seqeval README example: f1 = precision = recall = 0.5.
  const gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]];
  const pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]];
  const scores = entityScores(gold, pred);
  assertEquals([scores.precision, scores.recall, scores.f1], [0.5, 0.5, 0.5]);
  assertEquals(scores.perType.PER, { precision: 1, recall: 1, f1: 1, support: 1 });
  assertEquals(scores.perType.MISC!.f1, 0);
  const aligned = alignedTagSequences([-100, 1, -100, 0], [0, 1, 1, 2], ["O", "B-X", "I-X"]);
  assertEquals(aligned, { gold: ["B-X", "O"], predicted: ["B-X", "I-X"] });
});

Deno.test("accuracy and multiLabelScores compute micro and macro F1 as scikit-learn", () => {
  assertEquals(accuracy([1, 0, 1, 1], [1, 1, 1, 0]), 0.5);
  const gold = [[1, 0, 1], [0, 1, 0], [1, 1, 0]];
  const pred = [[1, 0, 0], [0, 1, 1], [1, 0, 0]];
  const scores = multiLabelScores(gold, pred);
  // tp = 3, fp = 1, fn = 2 → micro P 0.75, R 0.6, F1 2/3.
  assertAlmostEquals(scores.micro.precision, 0.75);
  assertAlmostEquals(scores.micro.recall, 0.6);
  assertAlmostEquals(scores.micro.f1, 2 / 3);
  // per label F1: a 1, b 2/3, c 0 → macro 5/9.
  assertAlmostEquals(scores.macro.f1, 5 / 9);
  assertAlmostEquals(scores.subsetAccuracy, 0);
});

Deno.test("trainEvalSplit is deterministic, disjoint and covering; epochBatches covers every feature", () => {
  const items = Array.from({ length: 101 }, (_, i) => i);
  const a = trainEvalSplit(items, { evalFraction: 0.2, seed: 3 });
  const b = trainEvalSplit(items, { evalFraction: 0.2, seed: 3 });
  const c = trainEvalSplit(items, { evalFraction: 0.2, seed: 4 });
  assertEquals(a, b);
  assert(JSON.stringify(a.eval) !== JSON.stringify(c.eval));
  assertEquals(a.eval.length, 20);
  assertEquals([...a.train, ...a.eval].sort((x, y) => x - y), items);
  assertThrows(() => trainEvalSplit(items, { evalFraction: 1, seed: 1 }), InvalidArgument, "evalFraction");
  const batches = epochBatches(10, 4, { seed: 1, epoch: 0 });
  assertEquals(batches.map((x) => x.length), [4, 4, 2]);
  assertEquals(batches.flatMap((x) => [...x]).sort((x, y) => x - y), [...Array(10).keys()]);
  assertEquals(epochBatches(10, 4, { seed: 1, epoch: 0, dropLast: true }).length, 2);
});

Deno.test("epochBatches with lengths: every feature once, batches of similar lengths, in a shuffled order", () => {
  const rng = Rng.seeded(5);
  const lengths = Uint32Array.from({ length: 1000 }, () => rng.randint(3, 122));
  const padded = (batches: Uint32Array[]) =>
    batches.reduce((sum, b) => sum + b.length * Math.max(...Array.from(b, (i) => lengths[i]!)), 0);
  const grouped = epochBatches(1000, 16, { seed: 1, epoch: 0, lengths, groupBatches: 20 });
  const random = epochBatches(1000, 16, { seed: 1, epoch: 0 });
  assertEquals(grouped.flatMap((b) => [...b]).sort((x, y) => x - y), [...Array(1000).keys()]);
  const real = lengths.reduce((a, b) => a + b, 0);
  // Random batches pad to nearly the longest length; grouped ones stay close to the real token count.
  assert(padded(random) > 1.6 * real, `random ${padded(random)} vs ${real}`);
  assert(padded(grouped) < 1.15 * real, `grouped ${padded(grouped)} vs ${real}`);
  // The batch order is shuffled after grouping: batch maxima do not run longest first within a mega-batch.
  const maxima = grouped.map((b) => Math.max(...Array.from(b, (i) => lengths[i]!)));
  assert(
    maxima.slice(0, 20).some((m, i) => i > 0 && m > maxima[i - 1]!),
    JSON.stringify(maxima.slice(0, 20)),
  );
  assertEquals(epochBatches(1000, 16, { seed: 1, epoch: 0, lengths, groupBatches: 20 }), grouped);
  assert(JSON.stringify(epochBatches(1000, 16, { seed: 1, epoch: 1, lengths })) !== JSON.stringify(grouped));
  assertEquals(epochBatches(1000, 16, { seed: 1, epoch: 0, lengths, dropLast: true }).length, 62);
  assertThrows(() => epochBatches(3, 2, { seed: 1, epoch: 0, lengths: [1, 2] }), InvalidArgument, "lengths");
});

Deno.test({
  name: "readLabelledFile reads the real ChnSentiCorp CSV and People's Daily BIO files",
  ignore: !hasShared,
  fn: async () => {
    const reviews = await readLabelledFile(new URL("chnsenticorp/train.csv", SHARED).pathname, {
      task: "classify",
    }) as TextExample[];
    assertEquals(reviews.length, 6199);
    assertEquals(reviews.filter((e) => e.labels[0] === "1").length, 4258);
    const labels = LabelSet.ofTextExamples(reviews);
    assertEquals(labels.labels, ["0", "1"]);
    const vocab = await Deno.readTextFile(new URL("bert-base-chinese/vocab.txt", SHARED));
    const tokenizer = WordPieceTokenizer.fromVocabText(vocab);
    const { features, report } = encodeTextExamples(reviews.slice(0, 500), tokenizer, labels, {
      task: "classify",
      maxLength: 128,
    });
    assert(features.every((f) => f.ids.length <= 128 && f.ids[0] === tokenizer.clsId));
    assert(report.truncated > 0 && report.samples[0]!.startsWith(reviews[0]!.source.file));

    const sentences = await readLabelledFile(new URL("peoples-daily-ner/train.bio", SHARED).pathname, {
      task: "ner",
    }) as NerExample[];
    assertEquals(sentences.length, 4636);
    const tags = LabelSet.ofNerExamples(sentences);
    assertEquals(tags.labels, ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]);
    // Long enough for every sentence: alignment alone loses no entity of this corpus.
    const whole = encodeNerExamples(sentences, tokenizer, tags, { maxLength: 1024 });
    assertEquals(whole.report.entities, getEntities(sentences.map((s) => s.tags)).length);
    assertEquals([whole.report.truncated, whole.report.entitiesLost], [0, 0]);
    // At 128 the long sentences are windowed, not cut: still no entity lost.
    const ner = encodeNerExamples(sentences, tokenizer, tags, { maxLength: 128 });
    assertEquals([ner.report.truncated, ner.report.entitiesLost], [0, 0]);
    assertEquals([ner.report.windowed, ner.report.windows, ner.features.length], [72, 4729, 4729]);
    assert(ner.features.every((f) => f.ids.length <= 128));
    const batch = nerBatch(ner.features.slice(0, 8), 128, tokenizer.padId);
    assertEquals(batch.tokenLabels!.length, 8 * 128);
    assert(batch.tokenLabels!.some((l) => l > 0));
  },
});

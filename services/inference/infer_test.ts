import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import type { Batch, ForwardOutput } from "../shared/engine/engine.ts";
import { InvalidArgument } from "../shared/errors.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import type { ServingBackend } from "./backends.ts";
import { Batcher, type InferenceOutput } from "./batcher.ts";
import { encodeInput, encodeWindowedInput, enumField, Inference, PayloadTooLarge, tagging } from "./infer.ts";
import type { ModelInstance, Registry } from "./registry.ts";
import { TINY_VOCAB } from "./testing.ts";
import { viterbiDecode } from "../shared/model/crf.ts";

const tokenizer = WordPieceTokenizer.fromVocabText(TINY_VOCAB.join("\n"));
const LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"];
const instance = { name: "tiny", tokenizer, labels: LABELS } as unknown as ModelInstance;

/** Logits that make `tags[t]` the clear winner at token t (specials get O). */
function outputFor(tags: string[]): InferenceOutput {
  const K = LABELS.length;
  const logits = new Float32Array(tags.length * K);
  tags.forEach((tag, t) => (logits[t * K + LABELS.indexOf(tag)] = 8));
  return { logits, queueMs: 0, inferenceMs: 0, batchSize: 1 };
}

Deno.test("tagging() groups BIO tags into typed entities with code point spans, text and score", () => {
  const text = "张三在北京";
  const encoded = encodeInput(instance, text, undefined, 64, "TRUNCATION_UNSPECIFIED", "text");
  //                 [CLS] 张       三       在   北       京       [SEP]
  const output = outputFor(["O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]);
  const result = tagging(instance, text, encoded, output, { returnTags: true, minScore: 0 });
  assertEquals(
    result.entities.map((
      e: { type: string; text: string; start: number; end: number },
    ) => [e.type, e.text, e.start, e.end]),
    [
      ["PER", "张三", 0, 2],
      ["LOC", "北京", 3, 5],
    ],
  );
  assert(result.entities[0].score > 0.99);
  assertEquals(result.tags.map((t: { tag: string }) => t.tag), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]);
  assertEquals(result.num_tokens, 7);
  assertEquals(tagging(instance, text, encoded, output, { returnTags: false, minScore: 1 }).entities, []);
});

Deno.test("tagging() starts a new entity on a type change or a stray I-, and word pieces follow their word", () => {
  const text = "hello unbelievable 北京";
  const encoded = encodeInput(instance, text, undefined, 64, "TRUNCATION_UNSPECIFIED", "text");
  assertEquals(encoded.encoding.tokens, ["[CLS]", "hello", "un", "##believ", "##able", "北", "京", "[SEP]"]);
  // "un" tagged I-PER (no B) starts an entity; its pieces' own tags (O, B-LOC) are ignored; 北's I-LOC
  // after a PER starts a LOC entity.
  const output = outputFor(["O", "O", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"]);
  const result = tagging(instance, text, encoded, output, { returnTags: true, minScore: 0 });
  assertEquals(result.entities.map((e: { type: string; text: string }) => [e.type, e.text]), [
    ["PER", "unbelievable"],
    ["LOC", "北京"],
  ]);
  assertEquals(result.tags.map((t: { tag: string }) => t.tag), [
    "O",
    "I-PER",
    "I-PER",
    "I-PER",
    "I-LOC",
    "I-LOC",
  ]);
  // With a CRF the decoded path wins over the emissions.
  const crf = {
    ...outputFor(["O", "O", "O", "O", "O", "O", "O", "O"]),
    paths: Int32Array.from([0, 1, 0, 0, 0, 3, 4, 0]),
  };
  const decoded = tagging(instance, text, encoded, crf, { returnTags: false, minScore: 0 });
  assertEquals(decoded.entities.map((e: { type: string; text: string }) => [e.type, e.text]), [
    ["PER", "hello"],
    ["LOC", "北京"],
  ]);
  assert(decoded.entities[0].score < 0.01, "a CRF path's score is the emission probability, not 1");
});

Deno.test("encodeInput() truncates by strategy and says so, or refuses with TRUNCATION_NONE", () => {
  const long = "今天天气很好".repeat(3);
  const cut = encodeInput(instance, long, undefined, 8, "TRUNCATION_UNSPECIFIED", "text");
  assertEquals(cut.truncated, true);
  assertEquals(cut.encoding.tokens, ["[CLS]", "今", "天", "天", "气", "很", "好", "[SEP]"]);
  assertThrows(
    () => encodeInput(instance, long, undefined, 8, "TRUNCATION_NONE", "texts[3]"),
    InvalidArgument,
    "texts[3]",
  );
  const onlySecond = encodeInput(instance, "好", "今天天气很好", 7, "TRUNCATION_ONLY_SECOND", "pair");
  assertEquals(onlySecond.encoding.tokens, ["[CLS]", "好", "[SEP]", "今", "天", "天", "[SEP]"]);
  assertEquals(onlySecond.encoding.typeIds, [0, 0, 0, 1, 1, 1, 1]);
  const onlyFirst = encodeInput(instance, "今天天气很好", "好", 7, "TRUNCATION_ONLY_FIRST", "pair");
  assertEquals(onlyFirst.encoding.tokens, ["[CLS]", "今", "天", "天", "[SEP]", "好", "[SEP]"]);
  assertThrows(
    () => encodeInput(instance, "好", "今天天气很好", 4, "TRUNCATION_ONLY_FIRST", "pair"),
    InvalidArgument,
    "TRUNCATION_ONLY_FIRST",
  );
  const fits = encodeInput(instance, "好", undefined, 8, "TRUNCATION_NONE", "text");
  assertEquals(fits.truncated, false);
});

Deno.test("enumField() takes names, short names and numbers and names the field otherwise", () => {
  const names = ["POOLING_UNSPECIFIED", "POOLING_CLS", "POOLING_MEAN"] as const;
  assertEquals(enumField("POOLING_MEAN", names, "options.pooling"), "POOLING_MEAN");
  assertEquals(enumField("mean", names, "options.pooling"), "POOLING_MEAN");
  assertEquals(enumField(1, names, "options.pooling"), "POOLING_CLS");
  assertEquals(enumField(undefined, names, "options.pooling"), "POOLING_UNSPECIFIED");
  assertThrows(() => enumField("median", names, "options.pooling"), InvalidArgument, "options.pooling");
});

Deno.test("encodeWindowedInput() windows a long text under the default and TRUNCATION_NONE, cuts it when asked", () => {
  const long = { ...instance, maxLength: 8 } as ModelInstance;
  const text = "今天天气很好".repeat(3); // 18 tokens
  assertEquals(encodeWindowedInput(long, "今天", "TRUNCATION_NONE", "text").windows, undefined);
  for (const truncation of ["TRUNCATION_UNSPECIFIED", "TRUNCATION_NONE"] as const) {
    const input = encodeWindowedInput(long, text, truncation, "text");
    assertEquals([input.truncated, input.encoding.ids.length], [false, 20]);
    // Windows of 6 tokens overlapping by at least 1 (a quarter of 6).
    assertEquals(input.windows, [
      { start: 0, end: 6 },
      { start: 5, end: 11 },
      { start: 10, end: 16 },
      { start: 12, end: 18 },
    ]);
  }
  const cut = encodeWindowedInput(long, text, "TRUNCATION_LONGEST_FIRST", "text");
  assertEquals([cut.truncated, cut.encoding.ids.length, cut.windows], [true, 8, undefined]);
});

const TAG_OF_CHAR: Record<string, string> = {
  张: "B-PER",
  三: "I-PER",
  李: "B-PER",
  四: "I-PER",
  北: "B-LOC",
  京: "I-LOC",
};

/** A served model around `forward` (a table standing in for the network), with the instance fields `fields`. */
function tableModel(
  maxLength: number,
  forward: (batch: Batch) => ForwardOutput,
  fields: Partial<Record<keyof ModelInstance, unknown>>,
): ModelInstance {
  const backend = {
    name: "cpu",
    maxTokens: 1 << 16,
    maxSeqLen: maxLength,
    forward,
    memoryBytes: () => 0,
    dispose: () => {},
  };
  return {
    ...instance,
    backend: backend as unknown as ServingBackend,
    padId: tokenizer.padId,
    vocabSize: TINY_VOCAB.length,
    version: "v1",
    maxLength,
    ...fields,
  } as unknown as ModelInstance;
}

/**
 * A served NER model that tags each character by TAG_OF_CHAR wherever it stands; `edgeBlind`, it gets the
 * first and last token of every pass wrong (O), as a model reading a token without context on one side might.
 */
function tableNer(maxLength: number, options: { crf?: boolean; edgeBlind?: boolean } = {}): ModelInstance {
  const K = LABELS.length;
  const tagOfId = tokenizer.idToToken.map((token) => Math.max(0, LABELS.indexOf(TAG_OF_CHAR[token] ?? "O")));
  const forward = (batch: Batch): ForwardOutput => {
    const { B, T } = batch;
    const logits = new Float32Array(B * T * K), paths = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const n = batch.attentionMask.subarray(b * T, (b + 1) * T).reduce((a, m) => a + m, 0);
      for (let p = 1; p < n - 1; p++) {
        const blind = options.edgeBlind && (p === 1 || p === n - 2);
        const k = blind ? 0 : tagOfId[batch.inputIds[b * T + p]!]!;
        logits[(b * T + p) * K + k] = 8;
        paths[b * T + p] = k;
      }
    }
    return options.crf ? { logits, paths } : { logits };
  };
  return tableModel(maxLength, forward, {
    id: maxLength * 4 + (options.crf ? 2 : 0) + (options.edgeBlind ? 1 : 0),
    label: "table-ner",
    tokenLevel: true,
    head: { task: "ner", numLabels: K, ...(options.crf ? { crf: true } : {}) },
    heads: ["token_classifier"],
  });
}

/** Runs `fn` with an Inference serving `model` alone through a real batcher. */
async function withInference(
  model: ModelInstance,
  fn: (inference: Inference) => Promise<void>,
  maxConcurrentRequests = 64,
): Promise<void> {
  const registry = { use: (_ref: unknown, run: (m: ModelInstance) => Promise<unknown>) => run(model) };
  const batcher = new Batcher({ maxBatchTokens: 4096, maxBatchRequests: 8, maxConcurrentRequests });
  try {
    await fn(new Inference(registry as unknown as Registry, batcher));
  } finally {
    await batcher.close();
  }
}

type Tagged = {
  entities: Array<{ type: string; text: string; start: number; end: number }>;
  tags: unknown[];
};
const spans = (r: Tagged) => r.entities.map((e) => [e.type, e.text, e.start, e.end]);

Deno.test("Tag on a text past the model's max length finds the entities of every window, offsets over the whole text", async () => {
  // 300 characters, one token each: 张三 first, 北京 across the end of the first window (126), 李四 at 180
  // and 北京 last.
  const filler = Array.from({ length: 300 }, (_, i) => "的一是不了人我在有他这中大来"[i % 14]!);
  const put = (at: number, word: string) => filler.splice(at, word.length, ...word);
  put(0, "张三");
  put(125, "北京");
  put(180, "李四");
  put(298, "北京");
  const text = filler.join("");
  const expected = [["PER", "张三", 0, 2], ["LOC", "北京", 125, 127], ["PER", "李四", 180, 182], [
    "LOC",
    "北京",
    298,
    300,
  ]];
  for (const crf of [false, true]) {
    let whole: Tagged | undefined;
    await withInference(tableNer(512, { crf }), async (inference) => {
      whole = (await inference.tag({ text, options: { return_tags: true } })).response.result;
    });
    await withInference(tableNer(128, { crf }), async (inference) => {
      const { result } = (await inference.tag({ text, options: { return_tags: true } })).response;
      assertEquals(spans(result), expected, `crf=${crf}`);
      assertEquals([result.truncated, result.num_tokens, result.tags.length], [false, 302, 300]);
      assertEquals(result, whole, "windows tag as one pass would");
      const none =
        (await inference.tag({ text, options: { truncation: "TRUNCATION_NONE" } })).response.result;
      assertEquals(spans(none), expected);
      // Cut when asked: one pass of 126 characters, 北京 cut in half and the entities past it gone.
      const cut =
        (await inference.tag({ text, options: { truncation: "TRUNCATION_LONGEST_FIRST" } })).response.result;
      assertEquals([spans(cut), cut.truncated, cut.num_tokens], [
        [["PER", "张三", 0, 2], ["LOC", "北", 125, 126]],
        true,
        128,
      ]);
      // A short and a long text in one batch each get their own passes back.
      const batch = (await inference.tagBatch({ texts: ["李四在北京", text] })).response.results;
      assertEquals(batch.map(spans), [[["PER", "李四", 0, 2], ["LOC", "北京", 3, 5]], expected]);
    });
  }
});

Deno.test("Tag takes each token of a long text from the window where it has the most context", async () => {
  // A model blind at the edges of its passes still finds 北京 across the first window's end (125, 126): 125 is
  // read from the second window. Entities stay off the text's own ends, where every window is blind.
  const text = "的".repeat(125) + "北京" + "的".repeat(40) + "李四" + "的".repeat(20);
  await withInference(tableNer(128, { edgeBlind: true }), async (inference) => {
    const { result } = (await inference.tag({ text })).response;
    assertEquals(spans(result), [["LOC", "北京", 125, 127], ["PER", "李四", 167, 169]]);
  });
  await withInference(tableNer(128), async (inference) => {
    await assertRejects(() => inference.tag({ text }), PayloadTooLarge, "--max-concurrent-requests");
  }, 1);
});

/**
 * A served sentiment classifier (neg, pos) whose logits for a pass are (count of 差, count of 好) among its
 * tokens: what a windowed model sees of a text is in its answer. `windows` as a model fine-tuned with them.
 */
function tableClassifier(maxLength: number, windows: boolean): ModelInstance {
  const good = tokenizer.vocab.get("好")!, bad = tokenizer.vocab.get("差")!;
  const forward = (batch: Batch): ForwardOutput => {
    const { B, T } = batch;
    const logits = new Float32Array(B * 2);
    for (let b = 0; b < B; b++) {
      for (let p = 0; p < T; p++) {
        if (!batch.attentionMask[b * T + p]) continue;
        const id = batch.inputIds[b * T + p]!;
        if (id === bad) logits[b * 2]! += 1;
        if (id === good) logits[b * 2 + 1]! += 1;
      }
    }
    return { logits };
  };
  return tableModel(maxLength, forward, {
    id: 1000 + maxLength * 2 + (windows ? 1 : 0),
    label: "table-classifier",
    tokenLevel: false,
    head: { task: "classify", numLabels: 2 },
    heads: ["classifier"],
    labels: ["neg", "pos"],
    thresholds: [0.5, 0.5],
    windows,
  });
}

/**
 * A served NER + CRF model whose emissions depend only on the token (a small per-token jitter), so any pass sees
 * the same emissions for a token wherever it stands, and whose paths are each pass's own Viterbi decode. Its
 * transitions reward staying on a tag, so the best tag of a stretch is decided by evidence far away: the case
 * where windows decoded alone disagree at their seams.
 */
function chainNer(maxLength: number, joint: boolean): ModelInstance {
  const K = LABELS.length;
  let seed = 17;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const crf = {
    start: new Float32Array(K),
    end: new Float32Array(K),
    transitions: Float32Array.from({ length: K * K }, (_, i) => (i % (K + 1) === 0 ? 2 : -2)),
  };
  const emission = tokenizer.idToToken.map(() => Float32Array.from({ length: K }, () => random()));
  const forward = (batch: Batch): ForwardOutput => {
    const { B, T } = batch;
    const logits = new Float32Array(B * T * K);
    for (let i = 0; i < B * T; i++) {
      if (batch.attentionMask[i]) logits.set(emission[batch.inputIds[i]!]!, i * K);
    }
    const paths = viterbiDecode(logits, batch.attentionMask, B, T, K, crf.start, crf.end, crf.transitions);
    return { logits, paths };
  };
  return tableModel(maxLength, forward, {
    id: 5000 + maxLength * 2 + (joint ? 1 : 0),
    label: "chain-ner",
    tokenLevel: true,
    head: { task: "ner", numLabels: K, crf: true },
    heads: ["token_classifier", "crf"],
    ...(joint ? { crf } : {}),
  });
}

Deno.test("Tag with a CRF decodes a long text's windows as one chain: the tags one pass would give", async () => {
  const text = Array.from(
    { length: 400 },
    (_, i) => "的一是不了人我在有他这中大来张三李四北京"[(i * 7) % 20]!,
  ).join("");
  const tagsOf = async (model: ModelInstance) => {
    let tags: unknown[] = [];
    await withInference(model, async (inference) => {
      const { result } = (await inference.tag({ text, options: { return_tags: true } })).response;
      tags = result.tags;
    });
    return tags;
  };
  const whole = await tagsOf(chainNer(512, true));
  assertEquals(whole.length, 400);
  assertEquals(await tagsOf(chainNer(16, true)), whole);
  // Each window decoded alone (the model's CRF tensors unknown to the stitcher) disagrees at the seams: the
  // case the joint decode is for.
  assert(JSON.stringify(await tagsOf(chainNer(16, false))) !== JSON.stringify(whole));
});

Deno.test("Classify on a model fine-tuned with windows averages the logits of a long text's windows", async () => {
  // 200 tokens: two 差 at the start, three 好 near the end. Cut at 16 tokens the text reads negative; whole it is
  // positive. Windows of 14 tokens, 11 apart: the logits are the mean over all windows' counts.
  const chars = Array.from({ length: 200 }, () => "的");
  chars[0] = chars[5] = "差";
  chars[180] = chars[190] = chars[199] = "好";
  const text = chars.join("");
  const windows = [...Array.from({ length: 17 }, (_, w) => w * 11), 186]; // tokenWindows(200, 14)
  const count = (char: string) =>
    windows.reduce((sum, start) => sum + chars.slice(start, start + 14).filter((c) => c === char).length, 0) /
    windows.length;
  await withInference(tableClassifier(16, true), async (inference) => {
    const { result } = (await inference.classify({ text })).response;
    assertEquals([result.label, result.truncated, result.num_tokens], ["pos", false, 202]);
    assertEquals(
      result.logits.map((z: number) => Math.fround(z)),
      [count("差"), count("好")].map(Math.fround),
    );
    // Cut when asked: the first 14 tokens alone.
    const cut = (await inference.classify({ text, options: { truncation: "TRUNCATION_LONGEST_FIRST" } }))
      .response.result;
    assertEquals([cut.label, cut.truncated, cut.logits], ["neg", true, [2, 0]]);
    // A short and a long text in one batch each get their own passes back.
    const batch = (await inference.classifyBatch({ texts: ["好", text, "差差"] })).response.results;
    assertEquals(batch.map((r: { label: string }) => r.label), ["pos", "pos", "neg"]);
  });
  // A model fine-tuned on cut texts is served cut, as it was trained.
  await withInference(tableClassifier(16, false), async (inference) => {
    const { result } = (await inference.classify({ text })).response;
    assertEquals([result.label, result.truncated, result.logits], ["neg", true, [2, 0]]);
  });
  await withInference(tableClassifier(16, true), async (inference) => {
    await assertRejects(() => inference.classify({ text }), PayloadTooLarge, "--max-concurrent-requests");
  }, 4);
});

Deno.test("encodeInput() stops tokenizing one token past max_length: a long text costs far less than reading it whole", () => {
  const time = (run: () => unknown) => {
    const started = performance.now();
    for (let i = 0; i < 3; i++) run();
    return performance.now() - started;
  };
  const short = "今天天气很好 hello world ".repeat(40); // ~1 KB
  const long = short.repeat(1024); // ~1 MiB, within MAX_TEXT_BYTES
  const whole = time(() => tokenizer.encode(long, undefined, { truncation: false }));
  const cutMs = time(() => encodeInput(instance, long, undefined, 16, "TRUNCATION_UNSPECIFIED", "text"));
  // Tokenized whole first (as it was), the cut took longer than reading the text once; now it reads 17 tokens.
  assert(
    cutMs < whole / 5,
    `cut to 16 tokens: ${cutMs.toFixed(1)} ms, the whole text: ${whole.toFixed(1)} ms`,
  );
  const cut = encodeInput(instance, long, undefined, 16, "TRUNCATION_UNSPECIFIED", "text");
  assertEquals([cut.truncated, cut.encoding.ids.length], [true, 16]);
  assertEquals(
    cut.encoding.ids,
    encodeInput(instance, short, undefined, 16, "TRUNCATION_UNSPECIFIED", "text").encoding.ids,
  );
});

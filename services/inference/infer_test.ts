import { assert, assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../shared/errors.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import type { InferenceOutput } from "./batcher.ts";
import { encodeInput, enumField, tagging } from "./infer.ts";
import type { ModelInstance } from "./registry.ts";
import { TINY_VOCAB } from "./testing.ts";

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

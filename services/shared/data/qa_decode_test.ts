import { assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import { decodeAnswers, decodeExamples } from "./qa_decode.ts";
import type { QaFeature } from "./qa_encode.ts";

// context "𠀀台北１０１，高５０８公尺。": one token per code point here, so offsets are [i, i + 1)
const context = "𠀀台北１０１，高５０８公尺。";
const N = Array.from(context).length; // 14
/** A window over context tokens [from, to) after a 3-token question: [CLS] q q q [SEP] window [SEP]. */
function window(from: number, to: number, scores: Record<number, [number, number]>) {
  const contextStart = 5, W = to - from, T = contextStart + W + 1;
  const offsets = new Int32Array(2 * W);
  for (let i = 0; i < W; i++) [offsets[2 * i], offsets[2 * i + 1]] = [from + i, from + i + 1];
  const startLogits = new Float32Array(T), endLogits = new Float32Array(T);
  for (const [token, [s, e]] of Object.entries(scores)) {
    startLogits[contextStart + Number(token) - from] = s;
    endLogits[contextStart + Number(token) - from] = e;
  }
  // the question and the specials score highest: they must never be picked
  startLogits[0] =
    endLogits[0] =
    startLogits[2] =
    endLogits[T - 1] =
      100;
  return { feature: { contextStart, offsets }, startLogits, endLogits };
}

Deno.test("decodeAnswers() finds the best span over windows and cuts it from the context as written", () => {
  const windows = [
    window(0, 9, { 1: [5, 0], 3: [0, 3], 8: [0, 2] }), // 1..8 would score 7 but is 8 tokens long
    window(5, N, { 7: [6, 0], 10: [0, 4] }),
  ];
  const answers = decodeAnswers(context, windows, { nBest: 3, maxAnswerLength: 6 });
  assertEquals(answers[0]!.text, "高５０８"); // tokens 7..10: 6 + 4
  assertEquals([answers[0]!.start, answers[0]!.end, answers[0]!.score], [7, 11, 10]);
  assertEquals(answers[1]!.text, "台北１"); // tokens 1..3 in window 0: 5 + 3
  assertEquals(answers.length, 3);
  assertEquals(Math.round(answers.reduce((a, x) => a + x.probability, 0) * 1e6), 1e6);
  // an answer longer than maxAnswerLength tokens is never a candidate
  const short = decodeAnswers(context, windows, { nBest: 5, maxAnswerLength: 3 });
  for (const a of short) assertEquals(a.end - a.start <= 3, true, a.text);
});

Deno.test("decodeAnswers() keeps a span seen in two overlapping windows once, with its better score", () => {
  const answers = decodeAnswers(context, [
    window(0, 9, { 6: [3, 3] }),
    window(5, N, { 6: [4, 4] }),
  ], { nBest: 20, maxAnswerLength: 1 });
  assertEquals(answers[0]!, { text: "，", start: 6, end: 7, score: 8, probability: answers[0]!.probability });
  assertEquals(answers.filter((a) => a.start === 6 && a.end === 7).length, 1);
  // a character outside the BMP is one code point of the offsets, two UTF-16 units of the text
  assertEquals(decodeAnswers(context, [window(0, 1, { 0: [1, 1] })])[0]!.text, "𠀀");
});

Deno.test("decodeExamples() groups features by example; bad sizes are refused", () => {
  const w = window(0, 4, { 1: [2, 0], 2: [0, 2] });
  const feature = { ...w.feature, example: 1 } as unknown as QaFeature;
  const out = decodeExamples([{ context: "無關" }, { context }], [feature], [w], { nBest: 1 });
  assertEquals(out[0], []);
  assertEquals(out[1]![0]!.text, "台北");
  assertThrows(() => decodeAnswers(context, [w], { nBest: 0 }), InvalidArgument, "top_k");
  assertThrows(
    () => decodeExamples([{ context }], [feature], [], {}),
    InvalidArgument,
    "0 rows of logits for 1",
  );
});

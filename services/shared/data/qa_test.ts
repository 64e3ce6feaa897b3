import { assert, assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import { WordPieceTokenizer } from "../wordpiece/mod.ts";
import { qaBatch } from "./batch.ts";
import { parseQaExamples, type QaExample, readQaFile } from "./qa.ts";
import {
  codePointIndex,
  encodeQaExamples,
  qaWindowDefaults,
  sliceCodePoints,
  validateQaWindows,
} from "./qa_encode.ts";

const TASKS = new URL("../../../../shared/data/tasks/", import.meta.url);
const hasTasks = await Deno.stat(new URL("drcd/train.jsonl", TASKS)).then(() => true, () => false) &&
  await Deno.stat(new URL("cmrc2018/train.jsonl", TASKS)).then(() => true, () => false);
if (!hasTasks) console.warn(`qa_test: DRCD/CMRC tests skipped: ${TASKS.pathname} absent`);

// bert-base-chinese's vocabulary, committed with the tokenizer fixtures (lower-cased, as the model is)
const tokenizer = WordPieceTokenizer.fromVocabText(
  await Deno.readTextFile(
    new URL("../../../tests/fixtures/tokenizer/bert-base-chinese-vocab.txt", import.meta.url),
  ),
);

const line = (o: Record<string, unknown>) => JSON.stringify(o);
const record = {
  id: "q1",
  title: "t",
  context: "他在2019年加入NASA，擔任「工程師」。",
  question: "他何時加入NASA？",
  answers: [{ text: "2019年", answer_start: 2 }],
};

Deno.test("parseQaExamples() reads JSONL and SQuAD v1.1 JSON to the same examples", () => {
  const jsonl = parseQaExamples(line(record) + "\n\n", { file: "a.jsonl" });
  const squad = parseQaExamples(
    JSON.stringify({
      data: [{
        title: "t",
        paragraphs: [{
          context: record.context,
          qas: [{ id: "q1", question: record.question, answers: record.answers }],
        }],
      }],
    }),
    { file: "a.json" },
  );
  for (const { examples, report } of [jsonl, squad]) {
    assertEquals(examples.length, 1);
    assertEquals(examples[0]!.answers, [{ text: "2019年", start: 2 }]);
    assertEquals(examples[0]!.goldTexts, ["2019年"]);
    assertEquals(examples[0]!.title, "t");
    assertEquals(report.mismatchedCount, 0);
  }
});

Deno.test("parseQaExamples() counts an answer whose text is not at answer_start, and leaves it out of training", () => {
  const bad = {
    ...record,
    answers: [{ text: "2019年", answer_start: 3 }, { text: "NASA", answer_start: 9 }],
  };
  const { examples, report } = parseQaExamples([line(record), line(bad)].join("\n"), { file: "d.jsonl" });
  assertEquals(report.examples, 2);
  assertEquals(report.answers, 3);
  assertEquals(report.mismatchedCount, 1);
  assertEquals(report.mismatched[0]!.source, { file: "d.jsonl", line: 2 });
  assertEquals(report.mismatched[0]!.found, "019年加");
  assertEquals(examples[1]!.answers, [{ text: "NASA", start: 9 }]);
  assertEquals(examples[1]!.goldTexts, ["2019年", "NASA"]); // the metric still scores against both
});

Deno.test("parseQaExamples() refuses bad records naming the file, line and field", () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ ...record, question: "  " }, "d.jsonl:2: question must be a non-empty string"],
    [{ ...record, question: 7 }, "d.jsonl:2: question must be a non-empty string"],
    [{ id: "x", question: "q", answers: [] }, "d.jsonl:2: context is missing"],
    [{ ...record, answers: [{ text: "年", answer_start: 40 }] }, "d.jsonl:2: answers[0].answer_start 40"],
    [
      { ...record, answers: [{ text: "年", answer_start: 1.5 }] },
      "d.jsonl:2: answers[0].answer_start must be an",
    ],
    [{ ...record, answers: [{ answer_start: 1 }] }, "d.jsonl:2: answers[0].text must be a non-empty string"],
  ];
  for (const [bad, message] of cases) {
    assertThrows(
      () => parseQaExamples(line(record) + "\n" + line(bad), { file: "d.jsonl" }),
      InvalidArgument,
      message,
    );
  }
  assertThrows(
    () => parseQaExamples("{nope", { file: "d.jsonl" }),
    InvalidArgument,
    "d.jsonl:1: not valid JSON",
  );
  assertThrows(
    () =>
      parseQaExamples(JSON.stringify({ data: [{ paragraphs: [{ qas: [{ question: "q" }] }] }] }), {
        file: "s.json",
      }),
    InvalidArgument,
    "s.json: data[0].paragraphs[0].qas[0]: context is missing",
  );
});

Deno.test("with skipEmptyQuestions, a record whose question is empty is left out and reported", () => {
  const { examples, report } = parseQaExamples([line(record), line({ ...record, question: "" })].join("\n"), {
    file: "d.jsonl",
    skipEmptyQuestions: true,
  });
  assertEquals(examples.length, 1);
  assertEquals(report.emptyQuestions, [{ file: "d.jsonl", line: 2 }]);
});

Deno.test("answer_start counts code points, as Python wrote it: a character outside the BMP is one", () => {
  const context = "𠀀字在前，答案在後";
  const { examples, report } = parseQaExamples(
    line({ id: "a", context, question: "答案？", answers: [{ text: "答案", answer_start: 5 }] }),
    { file: "x.jsonl" },
  );
  assertEquals(report.mismatchedCount, 0);
  assertEquals(examples[0]!.answers[0]!.start, 5);
  assertEquals(sliceCodePoints(context, codePointIndex(context), 5, 7), "答案");
});

Deno.test("qaWindowDefaults() scales HF run_qa's 384/128/64 to the model; validateQaWindows() names the conflict", () => {
  assertEquals(qaWindowDefaults(512), { maxLength: 384, docStride: 128, maxQueryLength: 64 });
  assertEquals(qaWindowDefaults(128), { maxLength: 128, docStride: 42, maxQueryLength: 21 });
  assertThrows(
    () => validateQaWindows({ maxLength: 32, docStride: 20, maxQueryLength: 10 }),
    InvalidArgument,
    "doc_stride must be below the context budget max_length - max_query_length - 3 = 32 - 10 - 3 = 19",
  );
});

/** Checks every feature of every example: layout, and that the labelled tokens cover exactly the answer. */
function checkFeatures(examples: QaExample[], maxLength: number, docStride: number, maxQueryLength: number) {
  const { features, report } = encodeQaExamples(examples, tokenizer, {
    maxLength,
    docStride,
    maxQueryLength,
    training: true,
  });
  const found = new Set<number>();
  for (const f of features) {
    const example = examples[f.example]!;
    assert(f.ids.length <= maxLength);
    assertEquals(f.ids[0], tokenizer.clsId);
    assertEquals(f.ids[f.contextStart - 1], tokenizer.sepId);
    assertEquals(f.ids.at(-1), tokenizer.sepId);
    assertEquals(f.typeIds[f.contextStart - 1], 0);
    assertEquals(f.typeIds[f.contextStart], 1);
    assertEquals(f.offsets.length / 2, f.ids.length - f.contextStart - 1);
    if (f.startPosition === 0) {
      assertEquals(f.endPosition, 0);
      continue;
    }
    found.add(f.example);
    const index = codePointIndex(example.context);
    const from = f.offsets[2 * (f.startPosition - f.contextStart)]!;
    const to = f.offsets[2 * (f.endPosition - f.contextStart) + 1]!;
    const covered = sliceCodePoints(example.context, index, from, to);
    const answer = example.answers[0]!;
    if (report.unaligned.some((u) => u.example === f.example)) {
      assert(covered.includes(answer.text), `${example.id}: ${covered} holds ${answer.text}`);
    } else {
      assertEquals(covered, answer.text, `${example.id} window ${f.window}`);
      assertEquals(from, answer.start);
    }
  }
  // Consecutive windows share docStride tokens, so an answer of at most that many tokens is whole in some
  // window; a longer one across a seam is in none (labelled [CLS] everywhere, as in HF). A token covers at
  // least one character, so an answer of at most docStride characters must have been found.
  const missed = examples.filter((e, i) => e.answers.length > 0 && !found.has(i));
  for (const e of missed) {
    assert(Array.from(e.answers[0]!.text).length > docStride, `${e.id}: answer in no window`);
  }
  return { features, report, missed: missed.length };
}

for (
  const [name, path] of [["DRCD train", "drcd/train.jsonl"], ["CMRC 2018 trial", "cmrc2018/train.jsonl"]]
) {
  Deno.test({
    name: `encodeQaExamples() on ${name}: every training answer maps back to exactly its text`,
    ignore: !hasTasks,
    fn: async () => {
      const { examples, report } = await readQaFile(new URL(path!, TASKS).pathname, {
        skipEmptyQuestions: true,
      });
      assertEquals(report.mismatchedCount, 0);
      // the CMRC 2018 trial set holds two empty questions: TRIAL_776_QUERY_4 (line 743), TRIAL_20_QUERY_0 (804)
      assertEquals(report.emptyQuestionCount, name === "DRCD train" ? 0 : 2);
      // short windows, so most contexts (300-1000 characters) go through several
      const { report: encoded, missed } = checkFeatures(examples, 128, 32, 24);
      assert(missed <= examples.length / 10, `${missed} answers in no window`);
      assert(encoded.windowedExamples > examples.length / 2, `${encoded.windowedExamples} windowed`);
      assertEquals(encoded.withoutAnswer, 0);
      // an answer cut inside a Latin word or number is rare: its tokens cover a little more (listed)
      assert(encoded.unalignedCount <= examples.length / 100, JSON.stringify(encoded.unaligned.slice(0, 5)));
      console.log(
        `${name}: ${examples.length} questions, ${encoded.features} features, ` +
          `${encoded.unalignedCount} answers not on token boundaries, ${encoded.questionsTruncated} questions cut, ` +
          `${missed} answers longer than the stride across a seam`,
      );
    },
  });
}

Deno.test("encodeQaExamples() reads a 20,000-character context through windows, never cutting it", () => {
  const filler = "我們在這裡寫下一段很長的文字，";
  let context = "";
  while (context.length < 20000) context += filler;
  const answer = "ABC公司的2024年報";
  const start = 15000;
  context = context.slice(0, start) + answer + context.slice(start);
  const example = parseQaExamples(
    line({ id: "long", context, question: "哪一份報告？", answers: [{ text: answer, answer_start: start }] }),
    { file: "long.jsonl" },
  ).examples;
  const { features, report, missed } = checkFeatures(example, 64, 16, 16);
  assertEquals(missed, 0);
  assert(features.length > 300, `${features.length} windows`);
  // the windows reach the end of the context
  const last = features.at(-1)!;
  assertEquals(last.offsets.at(-1), Array.from(context).length);
  assertEquals(report.unalignedCount, 0);
  const batch = qaBatch(features.slice(0, 4), 64, tokenizer.padId);
  assertEquals(batch.startPositions!.length, 4);
  assertEquals(batch.tokenTypeIds[batch.T + last.contextStart], 1);
});

Deno.test("encodeQaExamples() labels [CLS] where a window lacks the answer, and leaves out answerless examples", () => {
  const examples = parseQaExamples(
    [line(record), line({ ...record, id: "none", answers: [] })].join("\n"),
    { file: "x.jsonl" },
  ).examples;
  const training = encodeQaExamples(examples, tokenizer, {
    maxLength: 16,
    docStride: 2,
    maxQueryLength: 6,
    training: true,
  });
  assertEquals(training.report.withoutAnswer, 1);
  assert(training.features.length > 1);
  assert(
    training.features.some((f) => f.startPosition === 0) &&
      training.features.some((f) => f.startPosition > 0),
  );
  assertEquals(training.report.questionsTruncated, 1); // 他 何 時 加 入 nasa ？ = 7 > 6
  const predicting = encodeQaExamples(examples, tokenizer, {
    maxLength: 16,
    docStride: 2,
    maxQueryLength: 6,
    training: false,
  });
  assertEquals(new Set(predicting.features.map((f) => f.example)), new Set([0, 1]));
});

import { assert, assertEquals } from "@std/assert";
import { readQaFile } from "../data/qa.ts";
import { qaScores } from "../data/qa_metric.ts";
import { overlapAnswer } from "./qa_overlap.ts";

const DRCD_DEV = new URL("../../../../shared/data/tasks/drcd/dev.jsonl", import.meta.url);
const hasDrcd = await Deno.stat(DRCD_DEV).then(() => true, () => false);
if (!hasDrcd) console.warn(`qa_overlap_test: the DRCD dev score is skipped: ${DRCD_DEV.pathname} absent`);

const context =
  "梵語是印度的古典語言。要探討梵語的發展，可以考察印度教其它文本，如娑摩吠陀。貝爾在1876年發明了電話，後來創立公司。";

Deno.test("overlapAnswer() takes the span after the restated part when the question word follows it", () => {
  const answer = overlapAnswer("梵語的發展可以考察什麼文本？", context);
  assertEquals(answer.text, "印度教其它文本");
  assertEquals(Array.from(context).slice(answer.start, answer.end).join(""), answer.text);
});

Deno.test("overlapAnswer() takes the span before the restated part when the question word leads", () => {
  assertEquals(overlapAnswer("誰在1876年發明了電話？", context).text, "貝爾");
});

Deno.test({
  name: "overlapAnswer() on DRCD dev: a floor well above zero and far below a reader (CMRC 2018 metric)",
  ignore: !hasDrcd,
  fn: async () => {
    const { examples } = await readQaFile(DRCD_DEV.pathname);
    const scores = qaScores(
      examples.map((e) => ({ golds: e.goldTexts, prediction: overlapAnswer(e.question, e.context).text })),
    );
    console.log(`qa_overlap on DRCD dev: EM ${scores.exact_match.toFixed(2)} F1 ${scores.f1.toFixed(2)}`);
    // measured EM 4.88 / F1 23.45 (2026-12-08); the bounds catch a broken metric or reader, not noise
    assert(scores.f1 > 15 && scores.f1 < 40, `F1 ${scores.f1}`);
    assert(scores.exact_match > 1, `EM ${scores.exact_match}`);
  },
});

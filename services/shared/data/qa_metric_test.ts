import { assertAlmostEquals, assertEquals } from "@std/assert";
import {
  longestCommonSubstring,
  mixedSegmentation,
  normalizeAnswer,
  qaExactMatch,
  qaF1,
  qaScores,
  wordTokenize,
} from "./qa_metric.ts";

Deno.test("mixedSegmentation() splits CJK by character and keeps Latin words and numbers whole", () => {
  assertEquals(mixedSegmentation("在2019年加入NASA Ames，擔任「工程師」"), [
    "在",
    "2019",
    "年",
    "加",
    "入",
    "nasa",
    "ames",
    "，",
    "擔",
    "任",
    "「",
    "工",
    "程",
    "師",
    "」",
  ]);
  assertEquals(mixedSegmentation("「工程師」。", true), ["工", "程", "師"]);
  assertEquals(
    wordTokenize("3.14 and 1,000 U.S. (x)"),
    ["3.14", "and", "1,000", "u.s.", "(", "x", ")"].map((w) => w === "u.s." ? "U.S." : w),
  );
});

Deno.test("qaF1() is the official longest common substring F1, best over the gold answers (hand-checked)", () => {
  assertEquals(qaF1(["2019年"], "2019年"), 1);
  // gold [2019, 年], predicted [在, 2019, 年]: lcs 2, P 2/3, R 1
  assertAlmostEquals(qaF1(["2019年"], "在2019年"), 0.8, 1e-12);
  // a common substring, not subsequence: 北京大學 vs 北大學 share 大學 (2), P 2/3, R 2/4 → 4/7
  assertEquals(longestCommonSubstring(["北", "京", "大", "學"], ["北", "大", "學"]), 2);
  assertAlmostEquals(qaF1(["北京大學"], "北大學"), 4 / 7, 1e-12);
  // English words count as one segment each: [nasa, ames] vs [nasa]
  assertAlmostEquals(qaF1(["NASA Ames"], "nasa"), 2 / 3, 1e-12);
  // punctuation of the list never counts; the best gold wins; nothing in common scores 0
  assertEquals(qaF1(["「工程師」"], "工程師。"), 1);
  assertAlmostEquals(qaF1(["東京", "北京大學"], "北大學"), 4 / 7, 1e-12);
  assertEquals(qaF1(["東京"], "大阪"), 0);
});

Deno.test("qaExactMatch() compares after lower-casing, trimming and dropping the listed punctuation", () => {
  assertEquals(qaExactMatch(["「工程師」"], " 工程師。"), 1);
  assertEquals(qaExactMatch(["NASA"], "nasa"), 1);
  assertEquals(qaExactMatch(["2019年"], "2019"), 0);
  // the script lists "……" as one entry, which never matches a single character: "…" stays
  assertEquals(normalizeAnswer("好…"), "好…");
  assertEquals(qaExactMatch(["東京", "大阪"], "大阪"), 1);
});

Deno.test("qaScores() averages in percent and scores an unanswered question 0", () => {
  const scores = qaScores([
    { golds: ["2019年"], prediction: "2019年" },
    { golds: ["2019年"], prediction: "在2019年" },
    { golds: ["東京"], prediction: undefined },
  ]);
  assertAlmostEquals(scores.exact_match, 100 / 3, 1e-9);
  assertAlmostEquals(scores.f1, (100 * 1.8) / 3, 1e-9);
  assertEquals([scores.total, scores.skipped], [3, 1]);
});

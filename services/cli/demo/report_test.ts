import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { type Summary, verdict } from "./report.ts";

const summary = (bertforge: number, quick = false): Summary => ({
  task: "poet-of-a-wuyan-lushi",
  metric: "accuracy",
  bertforge,
  baselines: { linear: 0.74, majority: 0.25 },
  quick,
  seconds: 90,
});

Deno.test("verdict() calls the BERT ahead only when it beats every baseline", () => {
  assertEquals(verdict(summary(0.8)).ahead, true);
  assertStringIncludes(verdict(summary(0.8)).text, "6.0 points above the linear model");
  // Above the majority class but under the linear model: behind, said with the gap.
  const behind = verdict(summary(0.6));
  assertEquals(behind.ahead, false);
  assertStringIncludes(behind.text, "behind the linear model by 14.0 points");
  // Equal to the linear model is not a win.
  assertEquals(verdict(summary(0.74)).ahead, false);
  assertStringIncludes(verdict(summary(0.25)).text, "no better than always answering the majority class");
});

Deno.test("verdict() says a quick run is a smoke test, whatever its score", () => {
  assertStringIncludes(verdict(summary(0.9, true)).text, "smoke test");
  assert(!verdict(summary(0.9)).text.includes("smoke test"));
});

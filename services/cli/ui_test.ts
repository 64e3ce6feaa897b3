import { assertEquals, assertStringIncludes } from "@std/assert";
import { describeProgress } from "./ui.ts";

Deno.test("describeProgress(): a budgeted job shows the time left of its budget and an estimated step total", () => {
  const line = describeProgress({
    step: "100",
    total: "3600",
    unit: "steps",
    eta_seconds: 1750,
    metrics: { budget_seconds: 1800, train_seconds: 50 },
  });
  assertStringIncludes(line, "100/~3600 steps");
  assertStringIncludes(line, "29m10s left of 30m00s");
  assertEquals(line.includes("budget_seconds") || line.includes("train_seconds"), false);
});

Deno.test("describeProgress(): a step-count job keeps its ETA and exact total", () => {
  const line = describeProgress({
    step: "10",
    total: "20",
    unit: "steps",
    eta_seconds: 95,
    metrics: { accuracy: 0.5 },
  });
  assertStringIncludes(line, "10/20 steps");
  assertStringIncludes(line, "accuracy 0.5");
  assertStringIncludes(line, "ETA 1m35s");
});

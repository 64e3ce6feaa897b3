import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import {
  confusionMatrixSvg,
  downsample,
  formatTick,
  lineChart,
  lossCurveSvg,
  metricCurvesSvg,
  niceTicks,
  type Point,
} from "./svg.ts";

function parses(svg: string) {
  // A well-formed document has balanced tags; DOMParser is not in Deno, so count openers vs closers.
  assert(svg.startsWith("<svg "), "starts with <svg");
  assert(svg.endsWith("</svg>"), "ends with </svg>");
  const opens = (svg.match(/<(text|svg)\b/g) ?? []).length;
  const closes = (svg.match(/<\/(text|svg)>/g) ?? []).length;
  assertEquals(opens, closes);
}

Deno.test("niceTicks() spans the range with round steps", () => {
  assertEquals(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assertEquals(niceTicks(3, 97, 5), [0, 20, 40, 60, 80, 100]);
  const t = niceTicks(0.1, 0.3, 5);
  assertEquals(t[0], 0.1);
  assertEquals(t[t.length - 1], 0.3);
  assert(niceTicks(5, 5).length >= 2, "a flat series still gets an axis");
});

Deno.test("formatTick() keeps labels short", () => {
  assertEquals(formatTick(0.00012), "1.2e-4");
  assertEquals(formatTick(12000), "12k");
  assertEquals(formatTick(0.25), "0.25");
  assertEquals(formatTick(3), "3");
});

Deno.test("downsample() averages into buckets and drops NaN", () => {
  const pts: Point[] = Array.from({ length: 1000 }, (_, i) => [i, i % 2 ? NaN : i]);
  const out = downsample(pts, 100);
  assertEquals(out.length, 100);
  assert(out.every(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  assertEquals(downsample([[1, 2]], 10), [[1, 2]]);
});

Deno.test("lossCurveSvg() draws loss, eval loss and learning rate on its own axis", () => {
  const loss: Point[] = Array.from({ length: 5000 }, (_, i) => [i + 1, 10 * Math.exp(-i / 1000)]);
  const lr: Point[] = loss.map(([s]) => [s, s < 500 ? s * 1e-7 : 5e-5 * (1 - s / 5000)]);
  const svg = lossCurveSvg({ loss, learningRate: lr, evalLoss: [[1000, 4], [2000, 2]] });
  parses(svg);
  assertStringIncludes(svg, "train loss");
  assertStringIncludes(svg, "eval loss");
  assert(svg.includes("learning rate (right axis)"));
  assertEquals((svg.match(/<path /g) ?? []).length, 3);
  assert(svg.length < 60_000, `downsampled: ${svg.length} bytes`);
});

Deno.test("lineChart() escapes titles and labels", () => {
  const svg = lineChart({
    title: 'a<b & "c"',
    xLabel: "x",
    yLabel: "y",
    series: [{ name: "<s>", points: [[0, 1]] }],
  });
  parses(svg);
  assertStringIncludes(svg, "a&#60;b &#38; &#34;c&#34;");
  assert(!svg.includes("<s>"));
  assertStringIncludes(svg, "<circle", "a single point is still visible");
});

Deno.test("metricCurvesSvg() uses a 0..1 axis", () => {
  const svg = metricCurvesSvg({ "MLM accuracy": [[1, 0.1], [2, 0.3]], "NSP accuracy": [[1, 0.5], [2, 0.6]] });
  parses(svg);
  assertStringIncludes(svg, ">1<");
  assertStringIncludes(svg, "NSP accuracy");
});

Deno.test("confusionMatrixSvg() prints every count and checks its shape", () => {
  const svg = confusionMatrixSvg([[50, 3, 0], [7, 40, 1], [0, 2, 11]], ["neg", "pos", "B-<ORG>"]);
  parses(svg);
  for (const n of [50, 3, 7, 40, 11]) assertStringIncludes(svg, `>${n}<`);
  assertStringIncludes(svg, "B-&#60;ORG&#62;");
  assertEquals((svg.match(/<rect x=/g) ?? []).length, 9);
  assertThrows(() => confusionMatrixSvg([[1, 2]], ["a", "b"]), RangeError, "2x2");
});

import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { barChartSvg } from "./bars.ts";

/** The height of each bar's rectangle, in drawing order (the frame rectangle has no fill colour). */
function barHeights(svg: string): number[] {
  return [...svg.matchAll(/<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)" fill="#/g)].map((m) =>
    Number(m[1])
  );
}

Deno.test("barChartSvg() draws one bar per value, as tall as its value on a fixed axis", () => {
  const svg = barChartSvg({
    title: "chnsenticorp <accuracy>",
    yLabel: "accuracy",
    yRange: [0, 1],
    bars: [{ name: "bertforge", value: 0.9, color: "#1f77b4" }, { name: "linear", value: 0.45 }, {
      name: "majority",
      value: 0,
    }],
    format: (v) => `${(v * 100).toFixed(1)}%`,
  });
  assert(svg.startsWith("<svg ") && svg.endsWith("</svg>"));
  const heights = barHeights(svg);
  assertEquals(heights.length, 3);
  assertEquals(heights[1]! * 2, heights[0]!, "half the value, half the height");
  assertEquals(heights[2], 0);
  assertStringIncludes(svg, ">90.0%<");
  assertStringIncludes(svg, "chnsenticorp &#60;accuracy&#62;", "the title is escaped");
});

Deno.test("barChartSvg() refuses no bars and a value that is not a number", () => {
  assertThrows(() => barChartSvg({ title: "t", yLabel: "y", bars: [] }), RangeError, "without bars");
  assertThrows(
    () => barChartSvg({ title: "t", yLabel: "y", bars: [{ name: "x", value: NaN }] }),
    RangeError,
    `bar "x"`,
  );
});

/**
 * A bar chart as a self-contained SVG string, for scores side by side (a model against its baselines on one
 * task). Same look as the line charts of svg.ts: white background, grey grid, round ticks.
 *
 * @module
 */
import { chartOpening, escapeXml, FONT, formatTick, gridLine, niceTicks } from "./svg.ts";

export interface Bar {
  name: string;
  value: number;
  /** CSS colour; grey when absent. */
  color?: string;
}

export interface BarChartOptions {
  title: string;
  yLabel: string;
  bars: Bar[];
  /** Fix the axis range (scores: [0, 1]); otherwise from 0 to the largest value. */
  yRange?: [number, number];
  width?: number;
  height?: number;
  /** Text printed above each bar. @default the value as a tick label */
  format?: (value: number) => string;
}

export function barChartSvg(options: BarChartOptions): string {
  if (options.bars.length === 0) throw new RangeError("Cannot draw a bar chart without bars");
  const bad = options.bars.find((b) => !Number.isFinite(b.value));
  if (bad) throw new RangeError(`Cannot draw bar "${bad.name}": its value is ${bad.value}`);
  const width = options.width ?? 420, height = options.height ?? 300;
  const margin = { left: 56, right: 16, top: 40, bottom: 40 };
  const plotW = width - margin.left - margin.right, plotH = height - margin.top - margin.bottom;
  const [lo, hi] = options.yRange ??
    [Math.min(0, ...options.bars.map((b) => b.value)), Math.max(0, ...options.bars.map((b) => b.value))];
  const ticks = niceTicks(lo, hi, 5);
  const yLo = ticks[0]!, yHi = ticks[ticks.length - 1]!;
  const sy = (y: number) => margin.top + plotH - ((y - yLo) / (yHi - yLo || 1)) * plotH;
  const format = options.format ?? formatTick;
  const slot = plotW / options.bars.length;
  const barW = Math.min(72, slot * 0.6);
  const parts = chartOpening(width, height, options.title);
  for (const t of ticks) parts.push(...gridLine(margin.left, plotW, sy(t).toFixed(1), formatTick(t)));
  const base = sy(Math.max(yLo, Math.min(yHi, 0)));
  options.bars.forEach((bar, i) => {
    const x = margin.left + slot * i + (slot - barW) / 2;
    const top = sy(bar.value);
    parts.push(
      `<rect x="${x.toFixed(1)}" y="${Math.min(top, base).toFixed(1)}" width="${barW.toFixed(1)}" height="${
        Math.abs(base - top).toFixed(1)
      }" fill="${bar.color ?? "#999"}"><title>${escapeXml(`${bar.name}: ${bar.value}`)}</title></rect>`,
      `<text x="${(x + barW / 2).toFixed(1)}" y="${
        (Math.min(top, base) - 5).toFixed(1)
      }" text-anchor="middle" ` +
        `font-size="12" ${FONT}>${escapeXml(format(bar.value))}</text>`,
      `<text x="${(x + barW / 2).toFixed(1)}" y="${margin.top + plotH + 18}" text-anchor="middle" ` +
        `font-size="12" ${FONT}>${escapeXml(bar.name)}</text>`,
    );
  });
  parts.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
    `<text transform="translate(16 ${
      margin.top + plotH / 2
    }) rotate(-90)" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(options.yLabel)}</text>`,
    "</svg>",
  );
  return parts.join("\n");
}

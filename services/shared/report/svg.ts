/**
 * Charts as self-contained SVG strings: no DOM, no fonts to ship, opens in any browser and renders on GitHub.
 * The trainer writes them next to a published model (loss.svg, accuracy.svg, confusion.svg) and the
 * `make run` report embeds the same strings in its HTML page.
 */

export type Point = [x: number, y: number];

export interface Series {
  name: string;
  points: Point[];
  /** CSS colour; a palette colour by position when absent. */
  color?: string;
  /** Plot against the right-hand axis (e.g. learning rate beside loss). */
  rightAxis?: boolean;
  /** Dashed line, for secondary series such as evaluation loss. */
  dashed?: boolean;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Label of the right-hand axis; only drawn when a series uses it. */
  y2Label?: string;
  series: Series[];
  width?: number;
  height?: number;
  /** Fix the left axis range (accuracies: [0, 1]); otherwise fitted to the data. */
  yRange?: [number, number];
  /** Most points drawn per series; longer series are averaged in buckets so the file stays small. */
  maxPoints?: number;
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
export const FONT = `font-family="Helvetica,Arial,sans-serif"`;

/** The opening of every chart here: the svg element, a white ground and the title (close it with `</svg>`). */
export function chartOpening(width: number, height: number, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" ${FONT}>${escapeXml(title)}</text>`,
  ];
}

/** A horizontal grid line across the plot at `y` (pixels, as written), its tick label left of the plot. */
export function gridLine(left: number, plotW: number, y: string, label: string): string[] {
  return [
    `<line x1="${left}" x2="${left + plotW}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`,
    `<text x="${left - 6}" y="${y}" dy="4" text-anchor="end" font-size="11" ${FONT}>${label}</text>`,
  ];
}

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Compact number text for tick labels: 0.00012 → 1.2e-4, 12000 → 12k. */
export function formatTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e4) return `${trim(v / 1e3)}k`;
  if (a < 1e-2) {
    const [mant, exp] = v.toExponential(1).split("e");
    return `${mant!.replace(/\.0$/, "")}e${Number(exp)}`;
  }
  return trim(v);
}

function trim(v: number): string {
  return String(Number(v.toPrecision(3)));
}

/** Round tick positions spanning [lo, hi] (Heckbert's "nice numbers"), about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0];
  if (hi === lo) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const step = niceNumber((hi - lo) / Math.max(1, count - 1), true);
  const start = Math.floor(lo / step) * step;
  const end = Math.ceil(hi / step) * step;
  const ticks: number[] = [];
  // Rounding each tick to the step's decimals avoids 0.30000000000000004 in labels.
  const decimals = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  for (let t = start; t <= end + step / 2; t += step) ticks.push(Number(t.toFixed(Math.min(20, decimals))));
  return ticks;
}

function niceNumber(range: number, round: boolean): number {
  const exponent = Math.floor(Math.log10(range));
  const fraction = range / 10 ** exponent;
  let nice: number;
  if (round) nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  else nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * 10 ** exponent;
}

/** Averages consecutive points into at most `max` buckets (mean x, mean y), dropping non-finite values. */
export function downsample(points: Point[], max: number): Point[] {
  const finite = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (finite.length <= max) return finite;
  const out: Point[] = [];
  const size = finite.length / max;
  for (let b = 0; b < max; b++) {
    const from = Math.floor(b * size), to = Math.floor((b + 1) * size);
    let sx = 0, sy = 0;
    for (let i = from; i < to; i++) {
      sx += finite[i]![0];
      sy += finite[i]![1];
    }
    out.push([sx / (to - from), sy / (to - from)]);
  }
  return out;
}

function extent(values: number[]): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo === Infinity ? [0, 1] : [lo, hi];
}

/** A line chart with an optional right-hand axis, a legend and round ticks. */
export function lineChart(options: LineChartOptions): string {
  const width = options.width ?? 640, height = options.height ?? 360;
  const maxPoints = options.maxPoints ?? 600;
  const margin = { left: 64, right: 64, top: 40, bottom: 48 };
  const plotW = width - margin.left - margin.right, plotH = height - margin.top - margin.bottom;
  const series = options.series.map((s, i) => ({
    ...s,
    color: s.color ?? PALETTE[i % PALETTE.length]!,
    points: downsample(s.points, maxPoints),
  }));
  const left = series.filter((s) => !s.rightAxis), right = series.filter((s) => s.rightAxis);

  const xs = extent(series.flatMap((s) => s.points.map((p) => p[0])));
  const xTicks = niceTicks(xs[0], xs[1], 6);
  const xLo = xTicks[0]!, xHi = xTicks[xTicks.length - 1]!;
  const axisTicks = (list: typeof series, fixed?: [number, number]) => {
    const [lo, hi] = fixed ?? extent(list.flatMap((s) => s.points.map((p) => p[1])));
    return niceTicks(lo, hi, 5);
  };
  const yTicks = axisTicks(left, options.yRange);
  const y2Ticks = right.length ? axisTicks(right) : [];

  const sx = (x: number) => margin.left + ((x - xLo) / (xHi - xLo || 1)) * plotW;
  const scaleY = (ticks: number[]) => {
    const lo = ticks[0] ?? 0, hi = ticks[ticks.length - 1] ?? 1;
    return (y: number) => margin.top + plotH - ((y - lo) / (hi - lo || 1)) * plotH;
  };
  const sy = scaleY(yTicks), sy2 = scaleY(y2Ticks);

  const parts: string[] = chartOpening(width, height, options.title);
  for (const t of yTicks) {
    parts.push(...gridLine(margin.left, plotW, sy(t).toFixed(1), formatTick(t)));
  }
  for (const t of y2Ticks) {
    parts.push(
      `<text x="${margin.left + plotW + 6}" y="${sy2(t).toFixed(1)}" dy="4" font-size="11" ${FONT}>${
        formatTick(t)
      }</text>`,
    );
  }
  for (const t of xTicks) {
    const x = sx(t).toFixed(1);
    parts.push(
      `<line x1="${x}" x2="${x}" y1="${margin.top + plotH}" y2="${margin.top + plotH + 4}" stroke="#333"/>`,
      `<text x="${x}" y="${margin.top + plotH + 17}" text-anchor="middle" font-size="11" ${FONT}>${
        formatTick(t)
      }</text>`,
    );
  }
  parts.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
    `<text x="${margin.left + plotW / 2}" y="${height - 10}" text-anchor="middle" font-size="12" ${FONT}>${
      escapeXml(options.xLabel)
    }</text>`,
    `<text transform="translate(16 ${
      margin.top + plotH / 2
    }) rotate(-90)" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(options.yLabel)}</text>`,
  );
  if (right.length && options.y2Label) {
    parts.push(
      `<text transform="translate(${width - 12} ${
        margin.top + plotH / 2
      }) rotate(90)" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(options.y2Label)}</text>`,
    );
  }
  for (const s of series) {
    if (!s.points.length) continue;
    const scale = s.rightAxis ? sy2 : sy;
    const d = s.points.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${scale(y).toFixed(1)}`).join(
      "",
    );
    const dash = s.dashed ? ` stroke-dasharray="5 3"` : "";
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"${dash}/>`);
    if (s.points.length === 1) {
      const [x, y] = s.points[0]!;
      parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${scale(y).toFixed(1)}" r="3" fill="${s.color}"/>`);
    }
  }
  series.forEach((s, i) => {
    const y = margin.top + 12 + i * 16, x = margin.left + 10;
    const dash = s.dashed ? ` stroke-dasharray="5 3"` : "";
    const suffix = s.rightAxis && left.length ? " (right axis)" : "";
    parts.push(
      `<line x1="${x}" x2="${x + 18}" y1="${y}" y2="${y}" stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${x + 24}" y="${y}" dy="4" font-size="11" ${FONT}>${escapeXml(s.name + suffix)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/** Training loss (and evaluation loss) against steps, with the learning rate on the right-hand axis. */
export function lossCurveSvg(
  curves: { loss: Point[]; learningRate?: Point[]; evalLoss?: Point[] },
  title = "Training loss and learning rate",
): string {
  const series: Series[] = [{ name: "train loss", points: curves.loss, color: PALETTE[0] }];
  if (curves.evalLoss?.length) {
    series.push({ name: "eval loss", points: curves.evalLoss, color: PALETTE[3], dashed: true });
  }
  if (curves.learningRate?.length) {
    series.push({ name: "learning rate", points: curves.learningRate, color: PALETTE[2], rightAxis: true });
  }
  return lineChart({ title, xLabel: "step", yLabel: "loss", y2Label: "learning rate", series });
}

/** Accuracy-like metrics (0..1) against steps, e.g. MLM and NSP accuracy, or eval accuracy/F1. */
export function metricCurvesSvg(curves: Record<string, Point[]>, title = "Accuracy over steps"): string {
  const series = Object.entries(curves).filter(([, p]) => p.length).map(([name, points]) => ({
    name,
    points,
  }));
  return lineChart({ title, xLabel: "step", yLabel: "value", series, yRange: [0, 1] });
}

/**
 * A confusion matrix: rows are true labels, columns predicted. Cells are shaded by the share of their row
 * (so a rare class reads as clearly as a common one) and print the count.
 */
export function confusionMatrixSvg(matrix: number[][], labels: string[], title = "Confusion matrix"): string {
  const K = labels.length;
  if (matrix.length !== K || matrix.some((row) => row.length !== K)) {
    throw new RangeError(`confusion matrix must be ${K}x${K} to match ${K} labels`);
  }
  const cell = Math.max(18, Math.min(64, Math.floor(480 / Math.max(1, K))));
  const labelSpace = Math.min(160, 16 + 7 * Math.max(...labels.map((l) => l.length), 4));
  const top = 40 + labelSpace, left = 28 + labelSpace;
  const width = left + K * cell + 20, height = top + K * cell + 20;
  const fontSize = cell >= 36 ? 12 : 9;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" ${FONT}>${escapeXml(title)}</text>`,
    `<text x="${left + (K * cell) / 2}" y="${
      top - labelSpace + 4
    }" text-anchor="middle" font-size="12" ${FONT}>predicted</text>`,
    `<text transform="translate(14 ${
      top + (K * cell) / 2
    }) rotate(-90)" text-anchor="middle" font-size="12" ${FONT}>true</text>`,
  ];
  for (let r = 0; r < K; r++) {
    const rowTotal = matrix[r]!.reduce((a, b) => a + b, 0);
    for (let c = 0; c < K; c++) {
      const count = matrix[r]![c]!;
      const share = rowTotal ? count / rowTotal : 0;
      // Diagonal in blue, errors in red, so where the model goes wrong stands out.
      const hue = r === c ? "31,119,180" : "214,39,40";
      const x = left + c * cell, y = top + r * cell;
      parts.push(
        `<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="rgba(${hue},${
          (0.08 + 0.92 * share).toFixed(3)
        })" stroke="#fff"/>`,
        `<text x="${x + cell / 2}" y="${
          y + cell / 2
        }" dy="4" text-anchor="middle" font-size="${fontSize}" fill="${
          share > 0.55 ? "#fff" : "#111"
        }" ${FONT}>${count}</text>`,
      );
    }
    parts.push(
      `<text x="${left - 6}" y="${
        top + r * cell + cell / 2
      }" dy="4" text-anchor="end" font-size="11" ${FONT}>${escapeXml(labels[r]!)}</text>`,
    );
  }
  for (let c = 0; c < K; c++) {
    const x = left + c * cell + cell / 2, y = top - 6;
    parts.push(
      `<text transform="translate(${x} ${y}) rotate(-60)" font-size="11" ${FONT}>${
        escapeXml(labels[c]!)
      }</text>`,
    );
  }
  parts.push("</svg>");
  return parts.join("\n");
}

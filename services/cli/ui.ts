/**
 * What bertctl shows: tables for lists, a progress bar with ETA for job watches (stderr, redrawn in place
 * on a terminal, one line every few seconds otherwise), and JSON lines when `--json` is given.
 */
import { formatDuration } from "../shared/report/duration.ts";

export { formatDuration };

const encoder = new TextEncoder();

export interface Output {
  json: boolean;
  /** A line of the command's result (stdout). */
  line(text: string): void;
  /** One JSON value as a compact line (stdout). */
  jsonLine(value: unknown): void;
  /** A message for the person at the terminal (stderr). */
  note(text: string): void;
  /** True when stderr is a terminal (progress bars redraw in place). */
  readonly tty: boolean;
}

export function consoleOutput(json: boolean): Output {
  const write = (stream: typeof Deno.stdout | typeof Deno.stderr, text: string) => {
    const bytes = encoder.encode(text);
    for (let offset = 0; offset < bytes.length;) offset += stream.writeSync(bytes.subarray(offset));
  };
  return {
    json,
    line: (text) => write(Deno.stdout, text + "\n"),
    jsonLine: (value) => write(Deno.stdout, JSON.stringify(value) + "\n"),
    note: (text) => write(Deno.stderr, text + "\n"),
    tty: Deno.stderr.isTerminal(),
  };
}

function formatNumber(value: number): string {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  if (abs < 1e-3) return value.toExponential(1);
  return Number(value.toPrecision(4)).toString();
}

/** Renders rows as aligned columns with a header. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = rows.map((row) => row.map((cell) => String(cell)));
  const widths = headers.map((header, i) =>
    Math.max(header.length, ...cells.map((row) => (row[i] ?? "").length))
  );
  const render = (row: string[]) => row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd();
  return [render(headers), ...cells.map(render)].join("\n");
}

// deno-lint-ignore no-explicit-any
export type JobEvent = Record<string, any>;

/** One line describing a job event: bar, counts, losses, rates, ETA. */
export function describeProgress(event: JobEvent, width = 24): string {
  const step = Number(event.step ?? 0);
  const total = Number(event.total ?? 0);
  const parts: string[] = [];
  if (total > 0) {
    const fraction = Math.min(1, step / total);
    const filled = Math.round(fraction * width);
    parts.push(
      `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`,
    );
    const estimated = event.metrics?.budget_seconds !== undefined ? "~" : "";
    parts.push(`${formatNumber(step)}/${estimated}${formatNumber(total)} ${event.unit || "steps"}`);
  } else if (step > 0) {
    parts.push(`${formatNumber(step)} ${event.unit || "steps"}`);
  }
  if (event.epoch !== undefined) parts.push(`epoch ${event.epoch}`);
  if (event.loss !== undefined) parts.push(`loss ${formatNumber(event.loss)}`);
  if (event.mlm_accuracy !== undefined) parts.push(`mlm ${(event.mlm_accuracy * 100).toFixed(1)}%`);
  if (event.nsp_accuracy !== undefined) parts.push(`nsp ${(event.nsp_accuracy * 100).toFixed(1)}%`);
  if (event.learning_rate !== undefined) parts.push(`lr ${Number(event.learning_rate).toExponential(1)}`);
  if (event.tokens_per_s !== undefined) parts.push(`${formatNumber(event.tokens_per_s)} tok/s`);
  const { budget_seconds: budget, train_seconds: _spent, ...metrics } = event.metrics ?? {};
  for (const [key, value] of Object.entries(metrics)) {
    parts.push(`${key} ${formatNumber(Number(value))}`);
  }
  // A time-budgeted job's ETA is the training time left of its budget (its step total is an estimate).
  if (event.eta_seconds !== undefined) {
    parts.push(
      budget !== undefined
        ? `${formatDuration(event.eta_seconds)} left of ${formatDuration(Number(budget))}`
        : `ETA ${formatDuration(event.eta_seconds)}`,
    );
  }
  return parts.join("  ");
}

function stateName(state: unknown): string {
  return String(state ?? "").replace("JOB_STATE_", "").toLowerCase();
}

/**
 * Shows a job's events as they come. On a terminal the bar redraws in place; elsewhere a progress line is
 * printed at most every `intervalMs`. State changes, checkpoints, logs and artifacts are always printed.
 */
export class JobProgress {
  #lastPrinted = 0;
  #drawn = false;
  constructor(
    readonly output: Output,
    readonly label: string,
    readonly intervalMs = 5000,
  ) {}

  event(event: JobEvent): void {
    if (this.output.json) return this.output.jsonLine({ event });
    const type = String(event.type ?? "");
    if (type === "JOB_EVENT_TYPE_PROGRESS" || type === "JOB_EVENT_TYPE_EVAL") {
      const text = `${this.label} ${describeProgress(event)}`;
      if (this.output.tty) {
        this.#write(`\r\x1b[2K${text}`);
        this.#drawn = true;
      } else if (Date.now() - this.#lastPrinted >= this.intervalMs || type === "JOB_EVENT_TYPE_EVAL") {
        this.output.note(text);
        this.#lastPrinted = Date.now();
      }
      return;
    }
    const message = type === "JOB_EVENT_TYPE_STATE"
      ? `${this.label} ${stateName(event.state)}${
        event.message && event.message !== stateName(event.state) ? `: ${event.message}` : ""
      }`
      : type === "JOB_EVENT_TYPE_CHECKPOINT"
      ? `${this.label} checkpoint ${event.checkpoint?.name ?? ""} ${event.checkpoint?.version ?? ""}`
        .trimEnd()
      : type === "JOB_EVENT_TYPE_ARTIFACT"
      ? `${this.label} published ${event.artifact?.prefix || event.artifact?.name}`
      : event.message
      ? `${this.label} ${event.message}`
      : "";
    if (!message) return;
    this.finishLine();
    this.output.note(message);
  }

  /** Ends a redrawn bar with a newline so the next message starts clean. */
  finishLine(): void {
    if (this.#drawn) {
      this.#write("\n");
      this.#drawn = false;
    }
  }

  #write(text: string) {
    try {
      Deno.stderr.writeSync(encoder.encode(text));
    } catch {
      // stderr gone
    }
  }
}

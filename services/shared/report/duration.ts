import { InvalidArgument } from "../errors.ts";

/** `95` → `1m35s`; `3700` → `1h01m`: durations as people read them, in the CLI and in job messages alike. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * Parses a duration as people write one (a time budget on the CLI): `30m`, `2h`, `90s`, `1h30m`, or plain seconds (`1800`). Returns
 * seconds; throws InvalidArgument naming the value when it is none of these or not positive.
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  let seconds = NaN;
  if (/^\d+(\.\d+)?$/.test(trimmed)) seconds = Number(trimmed);
  else if (/^(\d+(\.\d+)?[dhms])+$/.test(trimmed)) {
    const unit: Record<string, number> = { d: 86400, h: 3600, m: 60, s: 1 };
    seconds = 0;
    for (const [, n, u] of trimmed.matchAll(/(\d+(?:\.\d+)?)([dhms])/g)) seconds += Number(n) * unit[u!]!;
  }
  if (!(seconds > 0)) {
    throw new InvalidArgument(
      `a duration must be a positive duration such as 30m, 2h, 1h30m or seconds: current value is ${
        JSON.stringify(text)
      }`,
    );
  }
  return seconds;
}

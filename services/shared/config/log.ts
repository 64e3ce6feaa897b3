/**
 * A tiny leveled logger. Lines go to stderr (stdout stays free for a command's real output), one
 * line per record: `time LEVEL name: message key=value ...`, values JSON-encoded when they need quoting.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";

export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  readonly name: string;
  readonly level: LogLevel;
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger for a part of this one (`tokenizer.jobs`), sharing level and sink. */
  child(name: string): Logger;
}

export function parseLogLevel(value: string, field = "log level"): LogLevel {
  const level = value.toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(level)) return level as LogLevel;
  throw new RangeError(`${field} must be one of ${LOG_LEVELS.join(", ")}: current value is "${value}"`);
}

function formatValue(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  if (typeof value === "string") return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === "bigint") return value.toString();
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

export function formatRecord(level: LogLevel, name: string, message: string, fields?: LogFields): string {
  let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${name}: ${message}`;
  for (const [key, value] of Object.entries(fields ?? {})) {
    if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
  }
  return line;
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // A closed stderr (parent gone) must never take the process down with it.
  }
}

/**
 * Makes a logger. `sink` receives each formatted line; tests pass an array's push.
 * @default level "info", or BERTFORGE_LOG_LEVEL when set
 */
export function createLogger(
  name: string,
  level?: LogLevel,
  sink: (line: string) => void = writeStderr,
): Logger {
  const threshold: LogLevel = level ?? envLogLevel();
  const emit = (at: LogLevel, message: string, fields?: LogFields) => {
    if (RANK[at] >= RANK[threshold]) sink(formatRecord(at, name, message, fields));
  };
  return {
    name,
    level: threshold,
    debug: (message, fields) => emit("debug", message, fields),
    info: (message, fields) => emit("info", message, fields),
    warn: (message, fields) => emit("warn", message, fields),
    error: (message, fields) => emit("error", message, fields),
    child: (part) => createLogger(`${name}.${part}`, threshold, sink),
  };
}

function envLogLevel(): LogLevel {
  let value: string | undefined;
  try {
    value = Deno.env.get("BERTFORGE_LOG_LEVEL");
  } catch {
    value = undefined; // no --allow-env: the default is fine
  }
  if (!value) return "info";
  try {
    return parseLogLevel(value, "BERTFORGE_LOG_LEVEL");
  } catch {
    return "info";
  }
}

/**
 * Subset of jsr:@std/cli (see README.md): `parseArgs` with std's semantics for the options bertforge uses
 * (`string`, `boolean`, `collect`, `negatable`, `alias`, `default`, `stopEarly`, `unknown`, `--`).
 */
export interface ParseOptions {
  string?: string[];
  boolean?: string[] | boolean;
  collect?: string[];
  negatable?: string[];
  alias?: Record<string, string | string[]>;
  default?: Record<string, unknown>;
  stopEarly?: boolean;
  "--"?: boolean;
  unknown?: (arg: string, key?: string, value?: unknown) => unknown;
}

// deno-lint-ignore no-explicit-any
export type Args = { _: (string | number)[]; "--"?: string[]; [key: string]: any };

export function parseArgs(args: string[], options: ParseOptions = {}): Args {
  const strings = new Set(options.string ?? []);
  const allBooleans = options.boolean === true;
  const booleans = new Set(Array.isArray(options.boolean) ? options.boolean : []);
  const collect = new Set(options.collect ?? []);
  const negatable = new Set(options.negatable ?? []);
  const aliases = new Map<string, string[]>();
  for (const [key, value] of Object.entries(options.alias ?? {})) {
    const names = [key, ...(Array.isArray(value) ? value : [value])];
    for (const name of names) aliases.set(name, names.filter((n) => n !== name));
  }
  const isKind = (set: Set<string>, key: string) =>
    set.has(key) || (aliases.get(key) ?? []).some((a) => set.has(a));
  const out: Args = { _: [] };
  for (const key of booleans) out[key] = false;
  for (const key of collect) out[key] = [];
  const setValue = (key: string, value: unknown) => {
    for (const name of [key, ...(aliases.get(key) ?? [])]) {
      if (isKind(collect, name) && value !== false) {
        out[name] = [...(Array.isArray(out[name]) ? out[name] : []), value];
      } else out[name] = value;
    }
  };
  const known = (key: string) =>
    isKind(strings, key) || isKind(booleans, key) || isKind(collect, key) || aliases.has(key) ||
    allBooleans ||
    (options.default !== undefined && key in options.default);
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      i++;
      break;
    }
    const long = /^--([^=]+)(?:=([\s\S]*))?$/.exec(arg);
    const short = !long && /^-([^-\d][\s\S]*)$/.exec(arg);
    if (long || short) {
      let key: string, inline: string | undefined;
      if (long) [key, inline] = [long[1]!, long[2]];
      else {
        const letters = short ? short[1]! : "";
        for (const letter of letters.slice(0, -1)) setValue(letter, isKind(strings, letter) ? "" : true);
        key = letters.slice(-1);
      }
      if (long && key.startsWith("no-") && (negatable.has(key.slice(3)) || isKind(booleans, key.slice(3)))) {
        setValue(key.slice(3), false);
        continue;
      }
      if (options.unknown && !known(key) && options.unknown(arg, key, inline) === false) continue;
      if (isKind(booleans, key) || (allBooleans && !isKind(strings, key))) {
        setValue(key, inline === undefined ? true : inline !== "false");
      } else if (inline !== undefined) {
        setValue(key, inline);
      } else {
        const next = args[i + 1];
        if (next !== undefined && (!next.startsWith("-") || /^-\d/.test(next) || next === "-")) {
          setValue(key, next);
          i++;
        } else setValue(key, isKind(strings, key) ? "" : true);
      }
      continue;
    }
    if (options.unknown && options.unknown(arg) === false) continue;
    out._.push(arg);
    if (options.stopEarly) {
      i++;
      break;
    }
  }
  const rest = args.slice(i);
  if (options["--"]) out["--"] = rest;
  else out._.push(...rest);
  for (const [key, value] of Object.entries(options.default ?? {})) {
    if (
      out[key] === undefined || (isKind(collect, key) && Array.isArray(out[key]) && out[key].length === 0)
    ) setValue(key, value);
  }
  return out;
}

/**
 * The naming rule of common.proto for every artifact a request names: corpora, vocabs, shard sets, data
 * sets and models. A name becomes one segment of a store key (`shards/<name>/...`), so the rule keeps it
 * to one segment that no store, folder or S3, can read as a path: no `/` or `\`, no leading `.` (hidden
 * files, `.` and `..`), and no `..` anywhere, so that a name never needs its context to be judged safe.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** The rule in words, as every refusal states it. */
export const NAME_RULE =
  "1-128 characters of letters, digits, '-', '_' or '.', not starting with '.' and with no '..'";

/** Whether `value` keeps the rule: for values that are one key segment but refused in other words (versions). */
export function isName(value: unknown): value is string {
  return typeof value === "string" && NAME.test(value) && !value.includes("..");
}

/**
 * Checks an artifact name and returns it; throws InvalidArgument naming `field` and the rule.
 *
 * ```ts
 * validateName("bert-mini_v1.2"); // "bert-mini_v1.2"
 * validateName("a/../b", "pretrain.shards"); // throws: pretrain.shards must be 1-128 characters of ...
 * ```
 */
export function validateName(name: unknown, field = "name"): string {
  if (!isName(name)) {
    throw new InvalidArgument(`${field} must be ${NAME_RULE}: got ${JSON.stringify(name)}`);
  }
  return name;
}

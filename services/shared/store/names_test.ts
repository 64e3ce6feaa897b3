import { assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import { isName, NAME_RULE, validateName } from "./names.ts";
import { validateName as modelName } from "../model/registry.ts";
import { vocabPrefix } from "../wordpiece/artifact.ts";
import { shardSetPrefix } from "../shards/manifest.ts";

const GOOD = ["a", "bert-mini_v1.2", "_x", "9", "a.", "a.b.c", "x".repeat(128)];
const BAD = [
  "",
  ".",
  "..",
  "...",
  ".hidden",
  "..x",
  "a..b",
  "x..",
  "/",
  "a/b",
  "a/../b",
  "/abs",
  "a//b",
  "a\\b",
  "..\\x",
  "-flag",
  "sp ace",
  "tab\t",
  "名字",
  "x".repeat(129),
];

Deno.test("validateName() accepts one key segment of letters, digits, '-', '_', '.'", () => {
  for (const name of GOOD) assertEquals(validateName(name), name);
});

Deno.test("validateName() refuses path-like names, naming the field and the rule", () => {
  for (const name of BAD) {
    const error = assertThrows(() => validateName(name, "pretrain.shards"), InvalidArgument);
    assertEquals(
      error.message,
      `pretrain.shards must be ${NAME_RULE}: got ${JSON.stringify(name)}`,
      `for ${JSON.stringify(name)}`,
    );
  }
  for (const value of [undefined, null, 3, ["a"]]) {
    assertThrows(() => validateName(value), InvalidArgument, "name must be");
  }
});

Deno.test("model, vocab and shard set names follow the same rule", () => {
  for (const name of [...GOOD, ...BAD]) {
    const ok = isName(name);
    const accepts = (f: () => unknown) => {
      try {
        f();
        return true;
      } catch (error) {
        if (!(error instanceof InvalidArgument)) throw error;
        return false;
      }
    };
    assertEquals(
      [accepts(() => modelName(name)), accepts(() => vocabPrefix(name)), accepts(() => shardSetPrefix(name))],
      [ok, ok, ok],
      `for ${JSON.stringify(name)}`,
    );
  }
});

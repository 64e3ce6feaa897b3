import { assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { parseArgs } from "./cli.ts";
import { parse, stringify } from "./csv.ts";
import { TextLineStream, toText } from "./streams.ts";
import { crypto } from "./crypto.ts";
import { encodeHex } from "./encoding.ts";

Deno.test("parseArgs() handles strings, booleans, negation, collect, aliases and positionals like std", () => {
  const args = parseArgs([
    "train",
    "--steps",
    "10",
    "--name=m",
    "-j",
    "--no-color",
    "--tag",
    "a",
    "--tag",
    "b",
    "x",
  ], {
    string: ["steps", "name", "tag"],
    boolean: ["json", "color"],
    collect: ["tag"],
    alias: { j: "json" },
    default: { color: true, batch: 8 },
  });
  assertEquals(args._, ["train", "x"]);
  assertEquals([args.steps, args.name, args.json, args.j, args.color, args.tag, args.batch], [
    "10",
    "m",
    true,
    true,
    false,
    ["a", "b"],
    8,
  ]);
  assertEquals(parseArgs(["--n", "-3", "--", "--raw"], { string: ["n"] }), { _: ["--raw"], n: "-3" });
});

Deno.test("csv parse() reads quoted fields with commas, quotes and newlines; rejects an unclosed quote", () => {
  const text = 'label,text\r\n1,"好,很""好""\n第二行"\n0,差\n';
  assertEquals(parse(text, { skipFirstRow: true }), [{ label: "1", text: '好,很"好"\n第二行' }, {
    label: "0",
    text: "差",
  }]);
  assertEquals(parse(stringify([["a,b", 'c"'], ["d", "e"]])), [["a,b", 'c"'], ["d", "e"]]);
  assertThrows(() => parse('a,"b\n'), SyntaxError, "not closed");
});

Deno.test("TextLineStream splits lines across chunk boundaries", async () => {
  const lines = await Array.fromAsync(
    ReadableStream.from(["a\r", "\nb\nc", "d"]).pipeThrough(new TextLineStream()),
  );
  assertEquals(lines, ["a", "b", "cd"]);
  assertEquals(await toText(ReadableStream.from([new TextEncoder().encode("你好")])), "你好");
});

Deno.test("crypto.subtle.digest() hashes an async iterable like the whole buffer", async () => {
  const whole = encodeHex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("abcdef")));
  const chunks = encodeHex(
    await crypto.subtle.digest(
      "SHA-256",
      ReadableStream.from([new TextEncoder().encode("abc"), new TextEncoder().encode("def")]),
    ),
  );
  assertEquals(whole, chunks);
  assertEquals(whole, "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721");
  await assertRejects(() => crypto.subtle.digest("SHA-3", new Uint8Array()), TypeError);
});

import { assert, assertEquals } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import {
  type DataTask,
  type LabelledFormat,
  type LineParser,
  nerExampleParser,
  parseLines,
  parseStream,
  textExampleParser,
} from "./formats.ts";

/** Fragments that reach deep into the readers: quotes, separators, JSON, tags, CJK, a BOM, CR. */
const PIECES = [
  "label,text\n",
  "label,text_a,text_b\n",
  ",",
  '"',
  '""',
  "\n",
  "\r\n",
  "\r",
  "\ufeff",
  "好",
  "a|b",
  "|",
  " ",
  '{"text":"北京","label":"x"}\n',
  '{"text":"北京","label":{"LOC":{"北京":[[0,1]]}}}\n',
  '{"text":',
  "[0,9]",
  "北 B-LOC\n",
  "京 I-LOC\n",
  "X Q-TAG\n",
  "null",
  "\u0000",
];

function* seeded(seed: number): Generator<number> {
  for (;;) yield (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
}

const COMBOS: Array<[LabelledFormat, DataTask]> = [
  ["csv", "classify"],
  ["csv", "multilabel"],
  ["csv", "pair"],
  ["jsonl", "classify"],
  ["jsonl", "pair"],
  ["bio", "ner"],
  ["cluener", "ner"],
];

function parserFor(format: LabelledFormat, task: DataTask): LineParser<unknown> {
  return task === "ner"
    ? nerExampleParser({ file: "f", format })
    : textExampleParser({ file: "f", format, task });
}

/** The outcome of a parse: the examples, or the InvalidArgument message; anything else fails the test. */
async function outcome(run: () => Promise<unknown[]> | unknown[]): Promise<string> {
  try {
    return JSON.stringify(await run());
  } catch (error) {
    assert(error instanceof InvalidArgument, `not an InvalidArgument: ${(error as Error)?.stack ?? error}`);
    return `error: ${error.message}`;
  }
}

Deno.test("the CSV/JSONL/BIO/CLUENER readers answer random input with examples or InvalidArgument, alike from a string and a stream", async () => {
  const random = seeded(2024);
  const next = () => random.next().value as number;
  for (let i = 0; i < 400; i++) {
    let text = "";
    const pieces = Math.floor(next() * 30);
    for (let p = 0; p < pieces; p++) {
      text += next() < 0.9
        ? PIECES[Math.floor(next() * PIECES.length)]!
        : String.fromCharCode(Math.floor(next() * 0x3000));
    }
    const bytes = new TextEncoder().encode(text);
    // The stream is cut at random places, inside characters and lines too.
    const cuts = [0, ...Array.from({ length: 3 }, () => Math.floor(next() * bytes.length)), bytes.length]
      .sort((a, b) => a - b);
    for (const [format, task] of COMBOS) {
      const fromString = await outcome(() => parseLines(text, parserFor(format, task)));
      const fromStream = await outcome(async () => {
        const out: unknown[] = [];
        const chunks = (async function* () {
          for (let c = 1; c < cuts.length; c++) yield bytes.subarray(cuts[c - 1], cuts[c]);
        })();
        for await (const e of parseStream(chunks, "f", parserFor(format, task))) out.push(e);
        return out;
      });
      assertEquals(fromStream, fromString, `${format}/${task} on ${JSON.stringify(text)}`);
    }
  }
});

Deno.test("parseStream refuses bytes that are not UTF-8 naming the byte offset, across chunk boundaries", async () => {
  const good = new TextEncoder().encode("label,text\n1,好好\n");
  const bytes = new Uint8Array([...good, 0xe5, 0xa5, 0x0a]); // 好 cut after two of its three bytes
  for (const cut of [1, good.length - 1, good.length + 1]) {
    const chunks = (async function* () {
      yield bytes.subarray(0, cut);
      yield bytes.subarray(cut);
    })();
    const error = await outcome(async () => {
      const out: unknown[] = [];
      for await (const e of parseStream(chunks, "f.csv", parserFor("csv", "classify"))) out.push(e);
      return out;
    });
    assertEquals(error, `error: f.csv: not valid UTF-8 at byte ${good.length}`, `cut at ${cut}`);
  }
});

/**
 * `deno task bench tokenize [--vocab DIR|vocab.txt] [--file F] [--cased] [--mb N] [--rounds R]`
 *
 * Encodes every line of F with bertforge's WordPieceTokenizer and, in the same run on the same lines,
 * with the Hugging Face `tokenizers` npm package (Rust, multi-threaded `encodeBatch`). Two measurements
 * per implementation, best of R rounds each:
 *   encode        the batch call alone (both return encodings whose fields are read lazily)
 *   encode+ids    the batch call plus reading every encoding's ids, what a consumer does
 * Prints one JSON line per implementation and a ratio line. Defaults: the bert-base-chinese vocab and a
 * file of ../shared/data reviews and NER sentences repeated to about 4 MB (the tokenizer fixtures'
 * edge-case texts where that data is absent).
 */
import { parseArgs } from "../../services/shared/std/cli.ts";
import { WordPieceTokenizer } from "../../services/shared/wordpiece/mod.ts";
import { sharedCorpus, sharedDataDir } from "../fixtures/tokenizer/corpus.ts";
import {
  BERT_BASE_CHINESE_VOCAB,
  FIXTURES,
  loadTokenizers,
  referenceTokenizer,
} from "../fixtures/tokenizer/reference.ts";

function defaultLines(targetBytes: number): { lines: string[]; source: string } {
  const dataDir = sharedDataDir();
  const base = dataDir
    ? sharedCorpus(dataDir).map((c) => c.text)
    : Deno.readTextFileSync(`${FIXTURES}golden_edge_cases.jsonl`).trim().split("\n").map((l) =>
      JSON.parse(l).text as string
    );
  const source = dataDir
    ? "../shared/data (chnsenticorp + peoples-daily-ner)"
    : "tokenizer edge-case fixtures";
  const lines: string[] = [];
  let bytes = 0;
  const encoder = new TextEncoder();
  const sizes = base.map((l) => encoder.encode(l).length + 1);
  for (let i = 0; bytes < targetBytes; i = (i + 1) % base.length) {
    lines.push(base[i]);
    bytes += sizes[i];
  }
  return { lines, source };
}

function vocabPath(arg: string | undefined): string {
  if (!arg) return BERT_BASE_CHINESE_VOCAB;
  try {
    if (Deno.statSync(arg).isDirectory) return `${arg.replace(/\/$/, "")}/vocab.txt`;
  } catch {
    throw new Error(`--vocab: ${arg} does not exist`);
  }
  return arg;
}

async function best(
  rounds: number,
  run: () => Promise<number> | number,
): Promise<{ seconds: number; tokens: number }> {
  let seconds = Infinity, tokens = 0;
  for (let r = 0; r < rounds; r++) {
    const start = performance.now();
    tokens = await run();
    seconds = Math.min(seconds, (performance.now() - start) / 1000);
  }
  return { seconds, tokens };
}

export async function main(args: string[]): Promise<void> {
  const flags = parseArgs(args, { string: ["vocab", "file", "mb", "rounds"], boolean: ["cased"] });
  const path = vocabPath(flags.vocab);
  const lowercase = !flags.cased;
  const rounds = Number(flags.rounds ?? 3);
  const { lines, source } = flags.file
    ? { lines: Deno.readTextFileSync(flags.file).split("\n").filter((l) => l !== ""), source: flags.file }
    : defaultLines(Number(flags.mb ?? 4) * 1e6);
  const bytes = lines.reduce((sum, l) => sum + l.length, 0);

  const tokenizer = WordPieceTokenizer.fromVocabText(Deno.readTextFileSync(path), { lowercase });
  tokenizer.encodeBatch(lines.slice(0, 2000)); // warm up the JIT
  const ours = await best(rounds, () => tokenizer.encodeBatch(lines).length);
  const oursIds = await best(rounds, () => {
    let tokens = 0;
    for (const e of tokenizer.encodeBatch(lines)) tokens += e.ids.length;
    return tokens;
  });
  const tokens = oursIds.tokens;
  const line = (impl: string, encode: { seconds: number }, withIds: { seconds: number }) => ({
    bench: "tokenize",
    impl,
    tokens_per_s: Math.round(tokens / encode.seconds),
    tokens_per_s_with_ids: Math.round(tokens / withIds.seconds),
    lines: lines.length,
    tokens,
    chars: bytes,
    seconds: Number(encode.seconds.toFixed(3)),
    threads: 1,
    source,
  });
  const oursLine = line("bertforge", ours, oursIds);
  console.log(JSON.stringify(oursLine));

  const tk = await loadTokenizers();
  if (!tk) {
    console.log(
      JSON.stringify({
        bench: "tokenize",
        impl: "hf-tokenizers",
        skipped: "the tokenizers package does not load",
      }),
    );
    return;
  }
  const reference = await referenceTokenizer(tk, { vocabPath: path, lowercase });
  await reference.encodeBatch(lines.slice(0, 2000));
  const theirs = await best(rounds, async () => (await reference.encodeBatch(lines)).length);
  const theirsIds = await best(rounds, async () => {
    let count = 0;
    for (const e of await reference.encodeBatch(lines)) count += e.getIds().length;
    return count;
  });
  if (theirsIds.tokens !== tokens) {
    throw new Error(`token counts differ: bertforge ${tokens}, tokenizers ${theirsIds.tokens}`);
  }
  const theirsLine = { ...line("hf-tokenizers", theirs, theirsIds), threads: navigator.hardwareConcurrency };
  console.log(JSON.stringify(theirsLine));
  console.log(
    JSON.stringify({
      bench: "tokenize",
      impl: "bertforge",
      ratio_vs: "hf-tokenizers",
      ratio: Number((oursLine.tokens_per_s / theirsLine.tokens_per_s).toFixed(2)),
      ratio_with_ids: Number((oursLine.tokens_per_s_with_ids / theirsLine.tokens_per_s_with_ids).toFixed(2)),
    }),
  );
}

if (import.meta.main) await main(Deno.args);

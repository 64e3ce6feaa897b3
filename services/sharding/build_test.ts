import { assert, assertAlmostEquals, assertEquals, assertNotEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { Jieba } from "@node-rs/jieba";
import { dict } from "@node-rs/jieba/dict";
import { AlreadyExists, Cancelled, FailedPrecondition, InvalidArgument, NotFound } from "../shared/errors.ts";
import {
  InstanceStream,
  originalIds,
  type PretrainInstance,
  readManifest,
  Rng,
  ShardSet,
} from "../shared/shards/mod.ts";
import { LocalStore } from "../shared/store/local.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { startS3rver } from "../shared/store/testing.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import { documentsOf, DocumentTokenizer, splitSentences } from "./block.ts";
import {
  blocksOf,
  type BuildOptions,
  buildPretrainingShards,
  corpusFromFiles,
  corpusFromStore,
  type CorpusSource,
} from "./build.ts";
import { Sha256 } from "../shared/store/hash.ts";
import { sentenceCount } from "./instances.ts";

const POETRY = new URL("../../node_modules/chinese-poetry/dist/quantangshi/", import.meta.url);

/** Documents of five Tang poems each, one couplet a line: long documents, as NSP wants them. */
async function poemDocuments(files: number[]): Promise<string[]> {
  const documents: string[] = [];
  for (const n of files) {
    const poems = JSON.parse(await Deno.readTextFile(new URL(`poet.tang.${n}.json`, POETRY))) as {
      paragraphs: string[];
    }[];
    for (let i = 0; i + 5 <= poems.length; i += 5) {
      documents.push(poems.slice(i, i + 5).flatMap((p) => p.paragraphs).filter((l) => l.trim()).join("\n"));
    }
  }
  return documents;
}

/** Specials, every character of the text, and a few English words with continuation pieces. */
function vocabFor(text: string): string {
  const chars = [...new Set([...text.replace(/\s/g, "")])].sort();
  return [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "un",
    "##aff",
    "##able",
    "play",
    "##ing",
    "##ed",
    ...chars,
  ]
    .join("\n");
}

interface Fixture {
  dir: string;
  corpusPath: string;
  vocabText: string;
  store: LocalStore;
}

let fixture: Promise<Fixture> | null = null;
function setup(): Promise<Fixture> {
  fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "bf-sharding-" });
    const documents = await poemDocuments([0, 1000]);
    const corpusPath = join(dir, "poems.txt");
    await Deno.writeTextFile(corpusPath, documents.join("\n\n") + "\n");
    return {
      dir,
      corpusPath,
      vocabText: vocabFor(documents.join("")),
      store: new LocalStore(join(dir, "store")),
    };
  })();
  return fixture;
}

function options(f: Fixture, name: string, extra: Partial<BuildOptions> = {}): BuildOptions {
  return {
    store: f.store,
    name,
    corpus: corpusFromFiles([f.corpusPath]),
    vocab: { text: f.vocabText, name: "test-vocab" },
    settings: { maxSeqLength: 64, dupeFactor: 2, seed: 7, blockBytes: 64 * 1024, maxShardBytes: 256 * 1024 },
    workers: 0,
    ...extra,
  };
}

async function readAll(store: ObjectStore, name: string): Promise<PretrainInstance[]> {
  const out: PretrainInstance[] = [];
  for await (const instance of (await ShardSet.open(store, name)).instances()) out.push(instance);
  return out;
}

Deno.test("splitSentences cuts a one-line document at Chinese and Western sentence ends", () => {
  assertEquals(splitSentences("床前明月光。疑是地上霜！举头望明月？低头"), [
    "床前明月光。",
    "疑是地上霜！",
    "举头望明月？",
    "低头",
  ]);
  assertEquals(splitSentences('He said "go." Then left... e.g.x 3.5 ok'), [
    'He said "go."',
    "Then left...",
    "e.g.x 3.5 ok",
  ]);
  assertEquals(splitSentences("他说：“好。”然后走了"), ["他说：“好。”", "然后走了"]);
});

/**
 * Blocks as lines read as strings make them: documents of trimmed non-blank lines, a file boundary ends
 * one, a document reaching `blockBytes` (3 per UTF-16 unit) is cut, a block ends with the document that
 * brings it to `blockBytes`.
 */
function referenceBlocks(files: string[], blockBytes: number): string[][][] {
  const blocks: string[][][] = [];
  let block: string[][] = [], blockSize = 0;
  for (const text of files) {
    let document: string[] = [], documentSize = 0;
    const endDocument = () => {
      if (document.length > 0) {
        block.push(document);
        blockSize += documentSize;
      }
      document = [];
      documentSize = 0;
      if (blockSize >= blockBytes) {
        blocks.push(block);
        block = [];
        blockSize = 0;
      }
    };
    for (const raw of text.replace(/^\uFEFF/, "").split("\n")) {
      const line = raw.trim();
      if (line === "") {
        endDocument();
        continue;
      }
      document.push(line);
      documentSize += line.length * 3;
      if (documentSize >= blockBytes) endDocument();
    }
    endDocument();
  }
  if (block.length > 0) blocks.push(block);
  return blocks;
}

/** A corpus of in-memory files streamed in chunks of the sizes `chunk` returns. */
function chunkedCorpus(files: Uint8Array[], chunk: () => number): CorpusSource {
  return {
    name: "chunked",
    files: files.map((bytes, f) => ({
      name: `file-${f}.txt`,
      open: () =>
        Promise.resolve(
          new ReadableStream<Uint8Array>({
            start(controller) {
              for (let at = 0; at < bytes.length;) {
                const n = Math.max(1, chunk());
                controller.enqueue(bytes.slice(at, at + n));
                at += n;
              }
              controller.close();
            },
          }),
        ),
    })),
  };
}

async function documentBlocks(corpus: CorpusSource, blockBytes: number): Promise<string[][][]> {
  const blocks: string[][][] = [];
  for await (const block of blocksOf(corpus, blockBytes, new Sha256(), { bytesRead: 0 })) {
    blocks.push(documentsOf(block));
  }
  return blocks;
}

Deno.test("blocks hold the documents of the text read as lines, however the corpus streams in", async () => {
  const space = "\u3000 \t\u00a0\u2003\ufeff\u205f\u1680\u2028\u202f\r";
  const files = [
    "\ufeff床前明月光，\r\n疑是地上霜。\r\n\r\n\u3000\u3000举头望明月，\n低头思故乡。  \n" +
    `${space}\n${space}${space}${space}\n\n\n𠀀𠀁 astral\u00a0\nunaffable playing.\u3000\n` +
    `x${space.repeat(5)}\n${space.repeat(5)}y\n\u0085not trimmed\u180e\n\u200bzero width\u200b\n`,
    "no line break at the end\n\n" + "长".repeat(3000) + "\n" + "短句。\n".repeat(500) + "last",
    "\n\n   \n\u3000\n",
    Array.from(
      { length: 300 },
      (_, d) =>
        Array.from({ length: 1 + (d % 7) }, (_, l) => `文${d}行${l}`).join("\n") + (d % 3 ? "\n\n" : "\n \n"),
    ).join(""),
    "",
    "only one line",
  ];
  const bytes = files.map((f) => new TextEncoder().encode(f));
  const rng = Rng.seeded(5);
  for (const blockBytes of [64, 1000, 5000, 1 << 20]) {
    const expected = referenceBlocks(files, blockBytes);
    for (const chunk of [() => 1 << 20, () => 1, () => rng.randint(1, 7), () => rng.randint(1, 2000)]) {
      assertEquals(await documentBlocks(chunkedCorpus(bytes, chunk), blockBytes), expected);
    }
  }
  // A file that is not UTF-8 is named, even inside a block that began in another file.
  const bad = chunkedCorpus([bytes[1]!, Uint8Array.from([0x41, 0x0a, 0xe4, 0xbd, 0x0a])], () => 100);
  await assertRejects(() => documentBlocks(bad, 1 << 20), InvalidArgument, "file-1.txt: not valid UTF-8");
});

Deno.test("DocumentTokenizer marks jieba words and ## continuations for whole-word masking", () => {
  const tokenizer = WordPieceTokenizer.fromVocabText(vocabFor("我们中出了一个叛徒"));
  const jieba = Jieba.withDict(dict);
  assertEquals(jieba.cut("我们中出了一个叛徒", true), ["我们", "中出", "了", "一个", "叛徒"]);
  const words = new DocumentTokenizer(tokenizer, jieba);
  words.addSentence("我们中出了一个叛徒");
  words.addSentence("unaffable playing");
  words.addSentence("   ");
  const document = words.finish()!;
  assertEquals(sentenceCount(document), 2);
  assertEquals(tokenizer.convertIdsToTokens(document.ids).slice(9), [
    "un",
    "##aff",
    "##able",
    "play",
    "##ing",
  ]);
  assertEquals(Array.from(document.wordStarts), [1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 0]);
  const plain = new DocumentTokenizer(tokenizer, null);
  plain.addSentence("我们中出了一个叛徒");
  assertEquals(Array.from(plain.finish()!.wordStarts), [1, 1, 1, 1, 1, 1, 1, 1, 1]);
});

Deno.test("DocumentTokenizer segments a document with one jieba call as it would sentence by sentence", () => {
  const sentences = [
    "我们中出了一个叛徒",
    "unaffable playing 2024年",
    "他说：“好。”",
    "𠀀𠀁北京 e.g. U.S.A.",
    "一个\u3000叛徒\u2028我们",
    "abc",
    "def我们",
  ];
  const tokenizer = WordPieceTokenizer.fromVocabText(vocabFor(sentences.join("")));
  const jieba = Jieba.withDict(dict);
  const one = new DocumentTokenizer(tokenizer, jieba);
  for (const sentence of sentences) one.addSentence(sentence);
  const together = new DocumentTokenizer(tokenizer, jieba);
  together.addSentences(sentences);
  const a = one.finish()!, b = together.finish()!;
  assertEquals(Array.from(b.ids), Array.from(a.ids));
  assertEquals(Array.from(b.wordStarts), Array.from(a.wordStarts));
  assertEquals(Array.from(b.sentenceStarts), Array.from(a.sentenceStarts));
});

Deno.test("DocumentTokenizer yields exactly the tokenizer's ids, with or without jieba", () => {
  const text = "我爱北京天安门 unaffable 2024年，𠀀 playing! ...";
  const tokenizer = WordPieceTokenizer.fromVocabText(vocabFor(text));
  const expected = tokenizer.encode(text, undefined, { addSpecialTokens: false }).ids;
  for (const jieba of [null, Jieba.withDict(dict)]) {
    const words = new DocumentTokenizer(tokenizer, jieba);
    words.addSentence(text);
    const document = words.finish()!;
    assertEquals(Array.from(document.ids), expected);
    // Every ## piece continues a word.
    tokenizer.convertIdsToTokens(document.ids).forEach((token, t) => {
      if (token.startsWith("##")) assertEquals(document.wordStarts[t], 0);
    });
  }
});

Deno.test("a built shard set has NSP ~50/50, ~15% of tokens masked, 80/10/10, and well-formed instances", async () => {
  const f = await setup();
  const manifest = await buildPretrainingShards(options(f, "stats"));
  const instances = await readAll(f.store, "stats");
  assertEquals(instances.length, manifest.instances);
  assert(manifest.shards.length > 1, "small shards");
  const vocab = manifest.vocab;
  let tokens = 0, masked = 0, asMask = 0, kept = 0, random = 0, randomNext = 0, short = 0;
  for (const x of instances) {
    const L = x.inputIds.length;
    assert(L <= 64);
    assertEquals(x.inputIds[0], vocab.clsId);
    assertEquals(x.inputIds[x.segmentALength - 1], vocab.sepId);
    assertEquals(x.inputIds[L - 1], vocab.sepId);
    assert(x.segmentALength >= 3 && x.segmentALength <= L - 2);
    assert(
      x.maskedPositions.length >= 1 && x.maskedPositions.length <= manifest.settings.maxPredictionsPerSeq,
    );
    tokens += L;
    masked += x.maskedPositions.length;
    if (x.isRandomNext) randomNext++;
    if (L < 40) short++;
    x.maskedPositions.forEach((p, k) => {
      assertNotEquals(x.maskedLabels[k], vocab.clsId);
      assertNotEquals(x.maskedLabels[k], vocab.sepId);
      if (x.inputIds[p] === vocab.maskId) asMask++;
      else if (x.inputIds[p] === x.maskedLabels[k]) kept++;
      else random++;
    });
  }
  assertEquals([manifest.tokens, manifest.maskedTokens, manifest.randomNext], [tokens, masked, randomNext]);
  // As in the reference, a chunk of a single sentence always gets a random next (there is no actual
  // next to pair it with), so the NSP share is 0.5 + 0.5 * (share of such chunks); measure that share
  // with the coin set to 0 and check the coin is fair on top of it.
  const forced = await buildPretrainingShards(
    options(f, "stats-forced", { settings: { ...options(f, "").settings, randomNextProb: 0 } }),
  );
  const forcedShare = forced.randomNext / forced.instances;
  assert(forcedShare < 0.2, `forced share ${forcedShare}`);
  assertAlmostEquals(randomNext / instances.length, 0.5 + 0.5 * forcedShare, 0.03);
  assertAlmostEquals(masked / tokens, 0.15, 0.01);
  assertAlmostEquals(asMask / masked, 0.8, 0.02);
  assertAlmostEquals(kept / masked, 0.1, 0.02);
  assertAlmostEquals(random / masked, 0.1, 0.02);
  // short_seq_prob 0.1: about a tenth of the instances aim at a random shorter length.
  assert(
    short / instances.length > 0.03 && short / instances.length < 0.2,
    `short ${short / instances.length}`,
  );
  assertEquals(
    manifest.corpus.documents,
    (await Deno.readTextFile(f.corpusPath)).trim().split("\n\n").length,
  );
  assertEquals(manifest.settings.dupeFactor, 2);
  assertEquals(manifest.vocab.size, f.vocabText.split("\n").length);
});

Deno.test("--wwm masks every token of a chosen word (jieba words, ## pieces) together", async () => {
  const f = await setup();
  const manifest = await buildPretrainingShards(
    options(f, "wwm", { settings: { ...options(f, "").settings, wholeWordMask: true } }),
  );
  assert(manifest.settings.wwmSegmenter?.includes("jieba"));
  let multiTokenWordsMasked = 0, masked = 0, tokens = 0;
  for (const x of await readAll(f.store, "wwm")) {
    assert(x.wordStarts, "word boundaries are stored");
    const isMasked = new Uint8Array(x.inputIds.length);
    for (const p of x.maskedPositions) isMasked[p] = 1;
    masked += x.maskedPositions.length;
    tokens += x.inputIds.length;
    for (let start = 0; start < x.inputIds.length;) {
      let end = start + 1;
      while (end < x.inputIds.length && !x.wordStarts[end]) end++;
      const count = isMasked.subarray(start, end).reduce((s, v) => s + v, 0);
      assert(count === 0 || count === end - start, `word [${start}, ${end}) partly masked`);
      if (count > 1) multiTokenWordsMasked++;
      start = end;
    }
  }
  assert(multiTokenWordsMasked > 100, `${multiTokenWordsMasked} multi-character words masked whole`);
  assertAlmostEquals(masked / tokens, 0.15, 0.02);
});

Deno.test("evalFraction holds out whole documents as the eval split, leaving the training split's draws alone", async () => {
  const f = await setup();
  const base = options(f, "").settings!;
  const manifest = await buildPretrainingShards(
    options(f, "held", { settings: { ...base, evalFraction: 0.2 } }),
  );
  assert(manifest.evalShards.length >= 1 && manifest.evalShards.every((s) => s.file.startsWith("eval-")));
  const share = manifest.evalInstances / (manifest.instances + manifest.evalInstances);
  assertAlmostEquals(share, 0.2, 0.06);
  const segmentA = (x: PretrainInstance) =>
    Array.from(originalIds(x).subarray(1, x.segmentALength - 1)).join(",");
  const train = new Set((await readAll(f.store, "held")).map(segmentA));
  const set = await ShardSet.open(f.store, "held");
  let shared = 0, held = 0;
  for await (const x of set.instances({ split: "eval" })) {
    held++;
    if (train.has(segmentA(x))) shared++;
  }
  assertEquals(held, manifest.evalInstances);
  assert(shared <= held * 0.01, `${shared} of ${held} held-out A segments also in training`);
  const stream = await InstanceStream.open(f.store, "held", { seed: 3, split: "eval", maxEpochs: 1 });
  assertEquals((await Array.fromAsync(stream)).length, manifest.evalInstances);
});

Deno.test("builds are deterministic: same bytes with and without workers, from .gz, different with another seed", async () => {
  const f = await setup();
  const inline = await buildPretrainingShards(options(f, "det-inline"));
  const workers = await buildPretrainingShards(options(f, "det-workers", { workers: 2 }));
  assertEquals(workers.shards.map((s) => s.sha256), inline.shards.map((s) => s.sha256));
  const gz = join(f.dir, "poems.txt.gz");
  const compressed = (await Deno.open(f.corpusPath)).readable.pipeThrough(new CompressionStream("gzip"));
  await Deno.writeFile(gz, compressed);
  const fromGz = await buildPretrainingShards(options(f, "det-gz", { corpus: corpusFromFiles([gz]) }));
  assertEquals(fromGz.shards.map((s) => s.sha256), inline.shards.map((s) => s.sha256));
  assertNotEquals(fromGz.corpus.sha256, inline.corpus.sha256);
  const reseeded = await buildPretrainingShards(
    options(f, "det-seed", { settings: { ...options(f, "").settings, seed: 8 } }),
  );
  assertNotEquals(reseeded.shards[0]!.sha256, inline.shards[0]!.sha256);
});

Deno.test("an existing name is ALREADY_EXISTS unless overwrite; a cancelled build leaves no shard set", async () => {
  const f = await setup();
  await buildPretrainingShards(options(f, "exists", { settings: { dupeFactor: 1, maxSeqLength: 32 } }));
  await assertRejects(
    () => buildPretrainingShards(options(f, "exists")),
    AlreadyExists,
    "'exists' already exists",
  );
  const again = await buildPretrainingShards(options(f, "exists", { overwrite: true }));
  assertEquals((await readManifest(f.store, "exists")).instances, again.instances);

  const binary = join(f.dir, "binary.txt");
  await Deno.writeFile(binary, Uint8Array.from([0xe4, 0xbd, 0xa0, 0x0a, 0xff, 0xfe, 0x00, 0x41]));
  await assertRejects(
    () => buildPretrainingShards(options(f, "binary", { corpus: corpusFromFiles([binary]) })),
    InvalidArgument,
    "binary.txt: not valid UTF-8 text",
  );

  const abort = new AbortController();
  await assertRejects(
    () =>
      buildPretrainingShards(
        options(f, "cancelled", { signal: abort.signal, onProgress: () => abort.abort() }),
      ),
    Cancelled,
  );
  const left: string[] = [];
  for await (const info of f.store.list("shards/cancelled/", { recursive: true })) left.push(info.key);
  assertEquals(left, []);
});

Deno.test("a build killed mid-way leaves no manifest, and a rerun completes", async () => {
  const f = await setup();
  const big = join(f.dir, "big.txt");
  const text = await Deno.readTextFile(f.corpusPath);
  await Deno.writeTextFile(big, Array(8).fill(text).join("\n"));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./build.ts", import.meta.url).pathname,
      "--store",
      join(f.dir, "store"),
      "--vocab",
      join(f.dir, "vocab.txt"),
      "--name",
      "killed",
      "--workers",
      "0",
      "--block-kb",
      "32",
      "--max-shard-mb",
      "0.05",
      "--dupe-factor",
      "5",
      big,
    ],
    stdout: "null",
    stderr: "null",
  });
  await Deno.writeTextFile(join(f.dir, "vocab.txt"), f.vocabText);
  const process = child.spawn();
  const shardDir = join(f.dir, "store", "shards", "killed");
  // Wait for the first shards to land, then kill without warning.
  for (let waited = 0; waited < 60_000; waited += 50) {
    const names = await Array.fromAsync(Deno.readDir(shardDir)).catch(() => []);
    if (names.filter((e) => e.name.endsWith(".bin")).length >= 2) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  process.kill("SIGKILL");
  const status = await process.status;
  assert(!status.success, "the build was still running when killed");
  await assertRejects(() => readManifest(f.store, "killed"), FailedPrecondition, "incomplete");
  await assertRejects(() => ShardSet.open(f.store, "killed"), FailedPrecondition);

  const manifest = await buildPretrainingShards(options(f, "killed", { corpus: corpusFromFiles([big]) }));
  const keys: string[] = [];
  for await (const info of f.store.list("shards/killed/", { recursive: true })) keys.push(info.key);
  assertEquals(
    keys.sort(),
    [
      ...manifest.shards.map((s) => `shards/killed/${s.file}`),
      ...["MANIFEST.json", "lineage.json", "vocab.txt"].map((file) => `shards/killed/${file}`),
    ].sort(),
  );
  assertEquals((await readAll(f.store, "killed")).length, manifest.instances);
});

Deno.test({
  name: "a corpus and shard set in S3 (s3rver) build and stream like the local ones",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const f = await setup();
    const s3 = await startS3rver();
    try {
      const store = s3.store("shards-test");
      await store.put("corpora/poems/part-0.txt", (await Deno.open(f.corpusPath)).readable);
      await assertRejects(() => corpusFromStore(store, "poems"), FailedPrecondition, "incomplete");
      await store.putJson("corpora/poems/MANIFEST.json", {
        format: "bertforge.manifest",
        version: 1,
        prefix: "corpora/poems",
        createdAt: new Date().toISOString(),
        parts: [{ name: "part-0.txt", size: (await Deno.stat(f.corpusPath)).size, sha256: "" }],
        metadata: {},
      });
      await assertRejects(() => corpusFromStore(store, "absent"), NotFound);
      const corpus = await corpusFromStore(store, "poems");
      assertEquals(corpus.name, "poems");
      const remote = await buildPretrainingShards(options(f, "s3", { store, corpus }));
      const local = await buildPretrainingShards(options(f, "s3-local"));
      assertEquals(remote.shards.map((s) => s.sha256), local.shards.map((s) => s.sha256));
      const stream = await InstanceStream.open(store, "s3", { seed: 1, rank: 1, world: 2, maxEpochs: 1 });
      let count = 0;
      for await (const instance of stream) {
        assert(originalIds(instance).length <= 64);
        count++;
      }
      assertEquals(count, Math.floor(remote.instances / 2));
      const batch = await (await InstanceStream.open(store, "s3", { seed: 1 })).nextBatch(4);
      assertEquals([batch!.B, batch!.T], [4, 64]);
    } finally {
      await s3.stop();
    }
  },
});

Deno.test("cleanup of the sharding test folder", async () => {
  const f = await setup();
  await f.store.close();
  await Deno.remove(f.dir, { recursive: true });
  void Rng;
});

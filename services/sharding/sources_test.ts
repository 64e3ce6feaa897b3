/**
 * Multi-source builds (weights, per-source reports, `.gz` sources) and packed rows, on real files and a
 * real local store. Each source writes with an alphabet of its own, so every token tells its source and
 * the shards themselves can be checked against the report.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { InvalidArgument } from "../shared/errors.ts";
import {
  originalIds,
  type PretrainInstance,
  Rng,
  type ShardManifest,
  ShardSet,
  type SourceReport,
} from "../shared/shards/mod.ts";
import { LocalStore } from "../shared/store/local.ts";
import { sha256 as sha256Hex } from "../shared/store/hash.ts";
import { type BuildOptions, buildPretrainingShards, corpusFromFiles, type WeightedSource } from "./build.ts";

const SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const SEP = 3, CLS = 2;
/** Four alphabets of 40 CJK characters, one per source; "。" ends sentences in all of them. */
const ALPHABETS = [0, 1, 2, 3].map((s) =>
  Array.from({ length: 40 }, (_, i) => String.fromCodePoint(0x4e00 + 40 * s + i))
);
const VOCAB = [...SPECIALS, "。", ...ALPHABETS.flat()];
const ID = new Map(VOCAB.map((token, id) => [token, id]));
const SOURCE_OF = (
  id: number,
) => (id < SPECIALS.length + 1 ? -1 : Math.floor((id - SPECIALS.length - 1) / 40));

/** `count` documents of 1-6 sentences of 1-30 characters of alphabet `s` (deterministic). */
function documents(s: number, count: number, seed: number): string[][] {
  const rng = Rng.seeded(seed, s);
  return Array.from(
    { length: count },
    () =>
      Array.from(
        { length: rng.randint(1, 6) },
        () =>
          Array.from({ length: rng.randint(1, 30) }, () => ALPHABETS[s]![rng.randint(0, 39)]).join("") + "。",
      ),
  );
}

const text = (docs: string[][]) => docs.map((d) => d.join("\n")).join("\n\n") + "\n";
/** A document's token ids, as the tokenizer gives them (one per character here). */
const idsOf = (doc: string[]) => [...doc.join("")].map((c) => ID.get(c)!);

interface Fixture {
  dir: string;
  store: LocalStore;
  docs: string[][][];
  paths: string[];
}

let fixture: Promise<Fixture> | null = null;
function setup(): Promise<Fixture> {
  fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "bf-sources-" });
    const docs = [0, 1, 2, 3].map((s) => documents(s, [40, 31, 25, 10][s]!, 5));
    const paths = ["alpha.txt", "beta.txt", "gamma.txt", "delta.txt"].map((n) => join(dir, n));
    for (const [s, path] of paths.entries()) await Deno.writeTextFile(path, text(docs[s]!));
    return { dir, store: new LocalStore(join(dir, "store")), docs, paths };
  })();
  return fixture;
}

function sources(f: Fixture, weights: number[]): WeightedSource[] {
  return weights.map((weight, s) => ({ corpus: corpusFromFiles([f.paths[s]!], `src${s}`), weight }));
}

function options(f: Fixture, name: string, extra: Partial<BuildOptions>): BuildOptions {
  return {
    store: f.store,
    name,
    vocab: { text: VOCAB.join("\n"), name: "alphabets" },
    // One block per source (they are a few KB), so a weight's share is exact for the source.
    settings: { maxSeqLength: 24, dupeFactor: 1, seed: 3, blockBytes: 1 << 20, evalFraction: 0 },
    workers: 0,
    overwrite: true,
    ...extra,
  };
}

async function readAll(f: Fixture, name: string): Promise<PretrainInstance[]> {
  const out: PretrainInstance[] = [];
  for await (const x of (await ShardSet.open(f.store, name)).instances()) {
    // Masks replaced some ids: put the originals back (copied: the views are reused).
    out.push({ ...x, inputIds: originalIds(x).slice() });
  }
  return out;
}

/** The one source all non-special tokens of an instance come from (fails on a mix). */
function sourceOf(x: PretrainInstance): number {
  const found = new Set([...x.inputIds].map(SOURCE_OF).filter((s) => s >= 0));
  assertEquals(found.size, 1, `an instance mixes sources ${[...found]}`);
  return [...found][0]!;
}

function report(m: ShardManifest, s: number): SourceReport {
  const r = m.sources?.find((r) => r.name === `src${s}`);
  assert(r, `no report for src${s}`);
  return r;
}

Deno.test("weights: 1 keeps every document, 0.5 a seeded half, 2 each twice, 0 skips the source unread", async () => {
  const f = await setup();
  const manifest = await buildPretrainingShards(
    options(f, "weighted", { sources: sources(f, [1, 0.5, 2, 0]) }),
  );
  const [a, b, c, d] = [0, 1, 2, 3].map((s) => report(manifest, s));
  assertEquals([a!.documents, a!.documentsUsed], [40, 40]);
  assertEquals([b!.documents, b!.documentsUsed], [31, 16]); // round(15.5)
  assertEquals([c!.documents, c!.documentsUsed], [25, 50]);
  assertEquals(d, {
    name: "src3",
    sha256: "",
    weight: 0,
    bytes: 0,
    documents: 0,
    characters: 0,
    documentsUsed: 0,
    instances: 0,
    tokens: 0,
    evalInstances: 0,
  });
  for (const [s, r] of [a!, b!, c!].entries()) {
    const bytes = await Deno.readFile(f.paths[s]!);
    assertEquals(r.sha256, await sha256Hex(bytes));
    assertEquals(r.bytes, bytes.byteLength);
    assertEquals(r.characters, f.docs[s]!.flat().join("").length);
  }

  // What the shards hold, attributed by alphabet, is what the report says.
  const instances = await readAll(f, "weighted");
  for (const [s, r] of [a!, b!, c!].entries()) {
    const mine = instances.filter((x) => sourceOf(x) === s);
    assertEquals(mine.length, r.instances, `src${s} instances`);
    assertEquals(mine.reduce((sum, x) => sum + x.inputIds.length, 0), r.tokens, `src${s} tokens`);
  }
  assertEquals(manifest.instances, a!.instances + b!.instances + c!.instances);
  assertEquals(manifest.tokens, a!.tokens + b!.tokens + c!.tokens);
  // A doubled source gives about twice the instances of the same documents at weight 1.
  const single = await buildPretrainingShards(options(f, "gamma-once", { sources: sources(f, [0, 0, 1]) }));
  const once = report(single, 2).instances;
  // (Not exactly: instance lengths are drawn at random.)
  assert(Math.abs(c!.instances - 2 * once) <= 0.15 * 2 * once, `${c!.instances} vs 2 × ${once}`);

  // Lineage names each source read, with its sha256; the skipped one is not an input.
  const lineage = JSON.parse(await f.store.getText("shards/weighted/lineage.json"));
  assertEquals(
    lineage.inputs.filter((i: { role: string }) => i.role === "corpus").map((i: { ref: { name: string } }) =>
      i.ref.name
    ),
    ["src0", "src1", "src2"],
  );
  assertEquals(lineage.inputs[1].ref.sha256, b!.sha256);
  assertEquals(manifest.corpus.name, "src0+src1+src2");

  // Seeded: the same build twice is the same.
  const again = await buildPretrainingShards(options(f, "weighted", { sources: sources(f, [1, 0.5, 2, 0]) }));
  assertEquals(again.shards.map((s) => s.sha256), manifest.shards.map((s) => s.sha256));
});

Deno.test("weight 0.5 uses whole documents, the same ones whatever other sources are mixed in", async () => {
  const f = await setup();
  const packed = (name: string, weights: number[]) =>
    buildPretrainingShards(
      options(f, name, { sources: sources(f, weights), settings: { ...packedSettings } }),
    );
  await packed("half-alone", [0, 0.5]);
  await packed("half-mixed", [1, 0.5]);
  const stream = async (name: string) =>
    contentOf((await readAll(f, name)).filter((x) => sourceOf(x) === 1)).tokens;
  const alone = await stream("half-alone");
  assertEquals(await stream("half-mixed"), alone);
  // The tokens are those of 16 of the 31 documents, whole and in corpus order.
  const kept: number[][] = [];
  let at = 0;
  for (const doc of f.docs[1]!) {
    const ids = idsOf(doc);
    if (ids.every((id, i) => alone[at + i] === id)) {
      kept.push(ids);
      at += ids.length;
    }
  }
  assertEquals(at, alone.length);
  assertEquals(kept.length, 16);
});

const packedSettings = {
  maxSeqLength: 16,
  dupeFactor: 1,
  seed: 3,
  blockBytes: 1 << 20,
  evalFraction: 0,
  packed: true,
  wholeWordMask: false,
};

/** The non-special tokens of rows in order, where [SEP]s stood among them, and where rows ended. */
function contentOf(rows: PretrainInstance[]) {
  const tokens: number[] = [];
  const separatorAt = new Set<number>(), rowEndAt = new Set<number>();
  for (const row of rows) {
    const ids = row.inputIds;
    assertEquals([ids[0], ids[ids.length - 1]], [CLS, SEP]);
    for (let i = 1; i < ids.length - 1; i++) {
      if (ids[i] === SEP) separatorAt.add(tokens.length);
      else tokens.push(ids[i]!);
    }
    rowEndAt.add(tokens.length);
  }
  return { tokens, separatorAt, rowEndAt };
}

Deno.test("packed rows are full [CLS] ... [SEP] rows of the corpus tokens in order, documents split by [SEP]", async () => {
  const f = await setup();
  for (const wholeWordMask of [false, true]) {
    const name = `packed-${wholeWordMask}`;
    const manifest = await buildPretrainingShards(
      options(f, name, {
        corpus: corpusFromFiles([f.paths[0]!], "src0"),
        settings: { ...packedSettings, wholeWordMask },
      }),
    );
    assertEquals(manifest.settings.packed, true);
    const rows = await readAll(f, name);
    assertEquals(rows.length, manifest.instances);
    // Every row is full but the last; one segment, no NSP label.
    rows.forEach((row, r) => {
      if (r < rows.length - 1) assertEquals(row.inputIds.length, 16, `row ${r}`);
      assertEquals(row.segmentALength, row.inputIds.length);
      assertEquals(row.isRandomNext, false);
    });
    assert(rows.at(-1)!.inputIds.length <= 16);
    assert(rows.some((row) => row.maskedPositions.length > 0));
    assertEquals(manifest.tokens, rows.reduce((sum, row) => sum + row.inputIds.length, 0));

    const { tokens, separatorAt, rowEndAt } = contentOf(rows);
    const docs = f.docs[0]!.map(idsOf);
    assertEquals(tokens, docs.flat());
    // A [SEP] stands at every document boundary that is not a row's end, and nowhere else.
    const boundaries = new Set<number>();
    let at = 0;
    for (const doc of docs.slice(0, -1)) boundaries.add(at += doc.length);
    for (const b of boundaries) assert(separatorAt.has(b) || rowEndAt.has(b), `boundary at ${b}`);
    for (const s of separatorAt) assert(boundaries.has(s), `stray [SEP] at ${s}`);
    // Long sentences (up to 31 tokens with its "。") are cut across 14-token rows.
    assert(f.docs[0]!.flat().some((sentence) => sentence.length > 14));
  }
});

Deno.test("packed with several sources: each source's rows are full but its last; reports match them", async () => {
  const f = await setup();
  const manifest = await buildPretrainingShards(
    options(f, "packed-mix", {
      sources: sources(f, [1, 2, 0.5]),
      settings: { ...packedSettings, dupeFactor: 2 },
    }),
  );
  const rows = await readAll(f, "packed-mix");
  let first = 0;
  for (let s = 0; s < 3; s++) {
    const r = report(manifest, s);
    const mine = rows.slice(first, first + r.instances);
    first += r.instances;
    assert(mine.every((row) => sourceOf(row) === s), `src${s} rows`);
    mine.slice(0, -1).forEach((row) => assertEquals(row.inputIds.length, 16));
    assertEquals(r.tokens, mine.reduce((sum, row) => sum + row.inputIds.length, 0));
    // Dupe factor 2 over the weighted documents: each pass holds all their tokens.
    const content = contentOf(mine).tokens.length;
    const docTokens = f.docs[s]!.reduce((sum, doc) => sum + idsOf(doc).length, 0);
    if (s === 1) assertEquals(content, 2 * 2 * docTokens);
    if (s === 0) assertEquals(content, 2 * docTokens);
  }
  assertEquals(first, rows.length);
});

Deno.test("a .gz source builds the same shards as its text, streamed, its stored bytes hashed", async () => {
  const f = await setup();
  const gz = join(f.dir, "beta.txt.gz");
  await (await Deno.open(f.paths[1]!)).readable.pipeThrough(new CompressionStream("gzip")).pipeTo(
    (await Deno.create(gz)).writable,
  );
  const plain = await buildPretrainingShards(
    options(f, "plain", { sources: [{ corpus: corpusFromFiles([f.paths[1]!], "src1"), weight: 1 }] }),
  );
  const zipped = await buildPretrainingShards(
    options(f, "zipped", { sources: [{ corpus: corpusFromFiles([gz], "src1"), weight: 1 }] }),
  );
  assertEquals(zipped.shards.map((s) => s.sha256), plain.shards.map((s) => s.sha256));
  const gzBytes = await Deno.readFile(gz);
  assertEquals(report(zipped, 1).bytes, gzBytes.byteLength);
  assertEquals(report(zipped, 1).sha256, await sha256Hex(gzBytes));
  assertEquals(report(zipped, 1).characters, report(plain, 1).characters);
});

Deno.test("bad sources are INVALID_ARGUMENT naming the field", async () => {
  const f = await setup();
  const bad = (extra: Partial<BuildOptions>, message: string) =>
    assertRejects(() => buildPretrainingShards(options(f, "bad", extra)), InvalidArgument, message);
  await bad({ sources: sources(f, [0, 0]) }, "every weight is 0");
  await bad({ sources: sources(f, [1, -1]) }, "sources[1].weight must be a number in [0, 1000]: got -1");
  await bad({ sources: sources(f, [1, NaN]) }, "sources[1].weight");
  await bad({ sources: [...sources(f, [1]), ...sources(f, [2])] }, "'src0' is given twice");
  await bad({ sources: [], corpus: corpusFromFiles([f.paths[0]!]) }, "give corpus or sources, not both");
  await bad({}, "sources must name at least one corpus");
  await bad(
    { sources: sources(f, [1]), settings: { packed: "yes" as unknown as boolean } },
    "packed must be a boolean",
  );
});

import { assert, assertEquals, assertRejects } from "../std/assert.ts";
import { InvalidArgument } from "../errors.ts";
import { type TrainProgress, trainWordPiece, WordPieceTokenizer } from "./mod.ts";
import { comparable, fromReference, loadTokenizers } from "../../../tests/fixtures/tokenizer/reference.ts";

const ENGLISH = [
  "The quick brown fox jumps over the lazy dog.",
  "A quick movement of the enemy will jeopardize six gunboats.",
  "The five boxing wizards jump quickly; jumping is fun!",
  "Quickly, quickly: the foxes are jumping over dogs again.",
];
const CHINESE = ["商务大床房，房间很大，床有2M宽，整体感觉经济实惠不错!", "宾馆在小街道上，不大好找。"];

Deno.test("trainWordPiece() puts special tokens first, then the alphabet in code point order", async () => {
  const t = await trainWordPiece(ENGLISH, { vocabSize: 60 });
  assertEquals(t.idToToken.slice(0, 5), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
  assertEquals([t.padId, t.unkId, t.clsId, t.sepId, t.maskId], [0, 1, 2, 3, 4]);
  const alphabet = t.idToToken.slice(5).filter((token) => [...token].length === 1);
  assertEquals(alphabet, [...alphabet].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!));
  assert(alphabet.includes("q") && alphabet.includes("!") && !alphabet.includes("Q"), "lowercased alphabet");
});

Deno.test("trainWordPiece() learns ## continuations and stops at vocabSize", async () => {
  const t = await trainWordPiece(ENGLISH, { vocabSize: 80, minFrequency: 2 });
  assertEquals(t.idToToken.length, 80);
  // Without a size cap merging runs until no pair occurs minFrequency times.
  const all = await trainWordPiece(ENGLISH, { vocabSize: 10_000, minFrequency: 2 });
  assert(all.idToToken.length > 80 && all.idToToken.length < 10_000, `${all.idToToken.length} tokens`);
  assert(
    t.idToToken.some((token) => token.startsWith("##") && token.length > 3),
    "merged continuation pieces",
  );
  assert(all.vocab.has("quick"), `"quick" occurs 4 times and should be a token: ${all.idToToken.slice(-30)}`);
  assertEquals(all.tokenize("quickest jumps"), ["quick", "##e", "##s", "##t", "jump", "##s"]);
});

Deno.test("trainWordPiece() keeps CJK characters as single tokens and respects minFrequency", async () => {
  const t = await trainWordPiece([...CHINESE, ...CHINESE], { vocabSize: 1000, minFrequency: 3 });
  for (const token of t.idToToken.slice(5)) {
    const chars = [...token.replace(/^##/, "")];
    if (chars.some((c) => /\p{Script=Han}/u.test(c))) assertEquals(chars.length, 1, `CJK token ${token}`);
  }
  // Every pair occurs at most twice, so minFrequency 3 allows no merge at all.
  assert(t.idToToken.every((token) => [...token.replace(/^##/, "")].length === 1 || token.startsWith("[")));
});

Deno.test("trainWordPiece() streams an async iterable, reports progress and honours limitAlphabet", async () => {
  async function* lines() {
    for (let i = 0; i < 50; i++) yield ENGLISH[i % ENGLISH.length];
  }
  const progress: TrainProgress[] = [];
  const t = await trainWordPiece(lines(), {
    vocabSize: 80,
    limitAlphabet: 10,
    progressEvery: 10,
    onProgress: (p) => progress.push(p),
  });
  assertEquals(progress.filter((p) => p.stage === "count").map((p) => p.lines), [10, 20, 30, 40, 50]);
  assertEquals(progress.at(-1)!.stage, "done");
  assertEquals(progress.at(-1)!.vocabSize, t.idToToken.length);
  const singles = t.idToToken.slice(5).filter((token) => [...token].length === 1);
  assertEquals(singles.length, 10);
});

Deno.test("trainWordPiece() validates its options", async () => {
  await assertRejects(() => trainWordPiece(ENGLISH, { vocabSize: 0 }), InvalidArgument, "vocabSize");
  await assertRejects(() => trainWordPiece(ENGLISH, { vocabSize: 10, minFrequency: -1 }), InvalidArgument);
  await assertRejects(
    () => trainWordPiece(ENGLISH, { vocabSize: 10, specialTokens: ["[PAD]", "[CLS]", "[SEP]", "[MASK]"] }),
    InvalidArgument,
    "[UNK]",
  );
});

Deno.test("trainWordPiece() is deterministic and its vocab.txt reloads to the same tokenizer", async () => {
  const a = await trainWordPiece(ENGLISH, { vocabSize: 100 });
  const b = await trainWordPiece(ENGLISH, { vocabSize: 100 });
  assertEquals(a.vocabText(), b.vocabText());
  const reloaded = WordPieceTokenizer.fromVocabText(a.vocabText());
  for (const line of ENGLISH) assertEquals(comparable(reloaded.encode(line)), comparable(a.encode(line)));
});

const tk = await loadTokenizers();
Deno.test({
  name: "a trained vocab's tokenizer.json loads in the tokenizers package and gives the same encodings",
  ignore: tk === null,
  async fn() {
    const t = await trainWordPiece([...ENGLISH, ...CHINESE], { vocabSize: 150, lowercase: true });
    const loaded = tk.Tokenizer.fromString(t.toTokenizerJson());
    for (const line of [...ENGLISH, ...CHINESE, "Unseen wörds, 未见过的字 [MASK]!"]) {
      assertEquals(
        comparable(t.encode(line, "a pair")),
        comparable(fromReference(await loaded.encode(line, "a pair"))),
      );
    }
  },
});

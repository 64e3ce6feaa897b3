import { assert, assertEquals, assertThrows } from "../std/assert.ts";
import { InvalidArgument } from "../errors.ts";
import { type EncodeOptions, type Encoding, WordPieceTokenizer } from "./mod.ts";
import { sharedCorpus, sharedDataDir } from "../../../tests/fixtures/tokenizer/corpus.ts";
import {
  BERT_BASE_CHINESE_VOCAB,
  comparable,
  ENGLISH_VOCAB,
  FIXTURES,
  fromReference,
  loadTokenizers,
  type ReferenceConfig,
  referenceEncode,
  referenceTokenizer,
} from "../../../tests/fixtures/tokenizer/reference.ts";
import { CONFIGS, digest } from "../../../tests/fixtures/tokenizer/make_golden.ts";

const tokenizers = new Map<string, WordPieceTokenizer>();
function tokenizerFor(config: ReferenceConfig): WordPieceTokenizer {
  const key = JSON.stringify(config);
  let tokenizer = tokenizers.get(key);
  if (!tokenizer) {
    tokenizer = WordPieceTokenizer.fromVocabText(Deno.readTextFileSync(config.vocabPath), {
      lowercase: config.lowercase,
      stripAccents: config.stripAccents,
    });
    tokenizers.set(key, tokenizer);
  }
  return tokenizer;
}
const chinese = () => tokenizerFor(CONFIGS["bert-base-chinese"]);
const tk = await loadTokenizers();

interface EdgeCase {
  config: string;
  text: string;
  pair?: string;
  options: EncodeOptions;
  expected?: Encoding;
  error?: string;
}

Deno.test("encode() matches the tokenizers goldens on every hand-made edge case, config and option set", () => {
  const lines = Deno.readTextFileSync(`${FIXTURES}golden_edge_cases.jsonl`).trim().split("\n");
  assert(lines.length > 2000, `expected the full edge-case golden file, got ${lines.length} lines`);
  const failures: string[] = [];
  for (const line of lines) {
    const c = JSON.parse(line) as EdgeCase;
    const tokenizer = tokenizerFor(CONFIGS[c.config]);
    if (c.error !== undefined) {
      try {
        tokenizer.encode(c.text, c.pair, c.options);
        failures.push(
          `${c.config} ${JSON.stringify(c.text)} ${
            JSON.stringify(c.options)
          }: expected an error (${c.error})`,
        );
      } catch (error) {
        if (!(error instanceof InvalidArgument)) throw error;
      }
      continue;
    }
    const actual = tokenizer.encode(c.text, c.pair, c.options);
    if (JSON.stringify(comparable(actual)) !== JSON.stringify(comparable(c.expected!))) {
      failures.push(
        `${c.config} ${JSON.stringify(c.text)} pair=${JSON.stringify(c.pair)} ${
          JSON.stringify(c.options)
        }\n` +
          `  expected ${JSON.stringify(comparable(c.expected!))}\n  actual   ${
            JSON.stringify(comparable(actual))
          }`,
      );
    }
  }
  assertEquals(failures.slice(0, 5), [], `${failures.length} of ${lines.length} edge cases differ`);
});

Deno.test({
  name:
    "encode() matches the tokenizers goldens on every line of ../shared/data (singles and truncated pairs)",
  ignore: sharedDataDir() === null,
  fn() {
    const corpus = sharedCorpus(sharedDataDir()!);
    const [metaLine, ...lines] = Deno.readTextFileSync(`${FIXTURES}golden_corpus.jsonl`).trim().split("\n");
    const meta = JSON.parse(metaLine).meta;
    assertEquals(
      digest(corpus.map((c) => c.text)),
      meta.textDigest,
      "../shared/data changed since the goldens were made: rerun tests/fixtures/tokenizer/make_golden.ts",
    );
    const failures: string[] = [];
    for (const line of lines) {
      const g = JSON.parse(line);
      const tokenizer = tokenizerFor(CONFIGS[g.config]);
      const text = corpus[g.line].text;
      const actual = g.pairLine === undefined
        ? tokenizer.encode(text)
        : tokenizer.encode(text, corpus[g.pairLine].text, g.options);
      if (digest(comparable(actual)) !== g.digest) {
        failures.push(`${g.config} line ${g.line}: ${JSON.stringify(text)}`);
      }
    }
    assert(lines.length > 15000, `expected the full corpus golden file, got ${lines.length} lines`);
    assertEquals(failures.slice(0, 5), [], `${failures.length} of ${lines.length} corpus encodings differ`);
  },
});

/** Deterministic random text from pools that stress every branch of the basic tokenizer. */
function randomTexts(count: number, seed: number): string[] {
  let state = seed;
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const pools = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "  \t\n\u3000\u00a0",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~，。！？、；：“”‘’（）《》",
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴",
    "éèêëàâäôöûüçñÅÉÑŒœßİıΣσςΌ",
    "\u0301\u0300\u0308\u0327\u200b\u200d\u00ad\u0000\u0001\u007f\u0085\ufeff\ufffd",
    "😀👍🏽🇨🇳❤️🥰🫠𠀀𪚥丽",
    "ＡＢＣｄｅｆ１２３！？　",
    "한국어日本語カタカナひらがなПриветمرحباשלוםहिन्दीไทย",
    "[MASK][CLS][SEP][PAD][UNK]",
  ];
  const texts: string[] = [];
  for (let t = 0; t < count; t++) {
    let text = "";
    const length = Math.floor(random() * 60);
    for (let i = 0; i < length; i++) {
      const pool = Array.from(pools[Math.floor(random() * pools.length)]);
      if (pool[0] === "[") {
        text += ["[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "["][Math.floor(random() * 6)];
      } else text += pool[Math.floor(random() * pool.length)];
    }
    texts.push(text);
  }
  return texts;
}

Deno.test({
  name: "encode() equals the live tokenizers package on 3000 random mixed-script texts per config",
  ignore: tk === null,
  async fn() {
    const texts = randomTexts(3000, 42);
    for (const name of ["bert-base-chinese", "bert-base-chinese-cased", "english-lower-keep-accents"]) {
      const config = CONFIGS[name];
      const ref = await referenceTokenizer(tk, config);
      const mine = tokenizerFor(config);
      const expected = await ref.encodeBatch(texts);
      for (let i = 0; i < texts.length; i++) {
        assertEquals(
          comparable(mine.encode(texts[i])),
          comparable(fromReference(expected[i])),
          `${name}: ${JSON.stringify(texts[i])}`,
        );
      }
      // Pairs with truncation and padding through the same path the goldens use.
      for (let i = 0; i + 1 < 400; i += 2) {
        const options = { maxLength: 24, padToMaxLength: true };
        assertEquals(
          comparable(mine.encode(texts[i], texts[i + 1], options)),
          comparable(await referenceEncode(ref, mine.padId, texts[i], texts[i + 1], options)),
          `${name} pair: ${JSON.stringify([texts[i], texts[i + 1]])}`,
        );
      }
    }
  },
});

Deno.test("encode() gives the documented bert-base-chinese example", () => {
  const e = chinese().encode("你好，BERT!");
  assertEquals(e.tokens, ["[CLS]", "你", "好", "，", "be", "##rt", "!", "[SEP]"]);
  assertEquals(e.ids, [101, 872, 1962, 8024, 8815, 8716, 106, 102]);
  assertEquals(e.offsets, [[0, 0], [0, 1], [1, 2], [2, 3], [3, 5], [5, 7], [7, 8], [0, 0]]);
  assertEquals(e.specialTokensMask, [1, 0, 0, 0, 0, 0, 0, 1]);
});

Deno.test("encode() offsets count code points, so astral characters take one unit", () => {
  const e = chinese().encode("😀 你");
  assertEquals(e.offsets.slice(1, -1), [[0, 1], [2, 3]]);
});

Deno.test("encode() finds [MASK] written in the text and keeps it whole", () => {
  const e = chinese().encode("今天[MASK]气");
  assertEquals(e.tokens, ["[CLS]", "今", "天", "[MASK]", "气", "[SEP]"]);
  assertEquals(e.offsets[3], [2, 8]);
});

Deno.test("encode() truncates longest_first, marks overflow and pads with [PAD]", () => {
  const t = chinese();
  const e = t.encode("一二三四五六七八", "甲乙", { maxLength: 8, padToMaxLength: true });
  assertEquals(e.tokens, ["[CLS]", "一", "二", "三", "[SEP]", "甲", "乙", "[SEP]"]);
  assertEquals(e.typeIds, [0, 0, 0, 0, 0, 1, 1, 1]);
  assertEquals(e.overflowed, true);
  const padded = t.encode("一", undefined, { maxLength: 5, padToMaxLength: true });
  assertEquals(padded.ids, [101, 671, 102, 0, 0]);
  assertEquals(padded.attentionMask, [1, 1, 1, 0, 0]);
  assertEquals(padded.overflowed, undefined);
  assertThrows(() => t.encode("a", "b", { maxLength: 2 }), InvalidArgument, "maxLength");
});

Deno.test("encodeBatch() pads to the longest encoding when no maxLength is given", () => {
  const batch = chinese().encodeBatch(["一", "一二三"], { padToMaxLength: true });
  assertEquals(batch.map((e) => e.ids.length), [5, 5]);
  const pairs = chinese().encodeBatch([["一", "二"], ["三", "四五"]]);
  assertEquals(pairs[1].typeIds, [0, 0, 0, 1, 1, 1]);
});

Deno.test("tokenizeWords() gives each basic word with its pieces and input offsets", () => {
  const words = chinese().tokenizeWords("BERT很好 unaffable [MASK]");
  assertEquals(words.map((w) => [w.word, w.start, w.end, w.pieces.join(" ")]), [
    ["bert", 0, 4, "be ##rt"],
    ["很", 4, 5, "很"],
    ["好", 5, 6, "好"],
    ["unaffable", 7, 16, "u ##na ##ff ##able"],
    ["[MASK]", 17, 23, "[MASK]"],
  ]);
  assertEquals(chinese().tokenize("BERT很好"), ["be", "##rt", "很", "好"]);
});

Deno.test("fromVocabText() refuses malformed vocab text naming the line", () => {
  assertThrows(() => WordPieceTokenizer.fromVocabText("[PAD]\n[UNK]\nfoo 12\n"), InvalidArgument, "line 3");
  assertThrows(
    () => WordPieceTokenizer.fromVocabText("[PAD]\n\u0000\u0001binary\n"),
    InvalidArgument,
    "line 2",
  );
  assertThrows(() => WordPieceTokenizer.fromVocabText(""), InvalidArgument, "empty");
  assertThrows(
    () => WordPieceTokenizer.fromVocabText("[PAD]\n[CLS]\n[SEP]\n[MASK]\na\n"),
    InvalidArgument,
    "[UNK]",
  );
});

Deno.test("fromVocabText() keeps the later id of a repeated token, as tokenizers does", () => {
  const t = WordPieceTokenizer.fromVocabText("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n##b\nb\n##b\n");
  assertEquals(t.encode("ab").ids, [2, 5, 8, 3]);
  assertEquals(t.idToToken[6], "##b");
  assertEquals(t.vocabText(), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n##b\nb\n##b\n");
});

Deno.test("convertTokensToIds() / convertIdsToTokens() map through the vocab and refuse unknown ids", () => {
  const t = chinese();
  assertEquals(t.convertTokensToIds(["你", "no-such-token"]), [872, 100]);
  assertEquals(t.convertIdsToTokens(new Int32Array([101, 872])), ["[CLS]", "你"]);
  assertThrows(() => t.convertIdsToTokens([1e9]), InvalidArgument, "ids[0]");
});

Deno.test("hash() is the sha256 of vocabText() and vocabText() round-trips the file", async () => {
  const text = Deno.readTextFileSync(BERT_BASE_CHINESE_VOCAB);
  const t = chinese();
  assertEquals(t.vocabText(), text);
  const expected = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))),
  )
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  assertEquals(t.hash(), expected);
});

Deno.test("toTokenizerJson() round-trips through fromTokenizerJson() with identical encodings", () => {
  for (const name of ["bert-base-chinese", "english-cased-strip"]) {
    const t = tokenizerFor(CONFIGS[name]);
    const back = WordPieceTokenizer.fromTokenizerJson(t.toTokenizerJson());
    assertEquals(back.basicOptions, t.basicOptions);
    for (const text of randomTexts(200, 7)) {
      assertEquals(comparable(back.encode(text, "对")), comparable(t.encode(text, "对")));
    }
  }
  assertThrows(() => WordPieceTokenizer.fromTokenizerJson("{"), InvalidArgument, "tokenizer.json");
  assertThrows(
    () => WordPieceTokenizer.fromTokenizerJson(JSON.stringify({ model: { type: "BPE" } })),
    InvalidArgument,
    "model.type",
  );
});

Deno.test({
  name: "toTokenizerJson() loads in the tokenizers package and gives the same encodings",
  ignore: tk === null,
  async fn() {
    for (const vocabPath of [BERT_BASE_CHINESE_VOCAB, ENGLISH_VOCAB]) {
      const t = tokenizerFor({ vocabPath, lowercase: true });
      const loaded = tk.Tokenizer.fromString(t.toTokenizerJson());
      const texts = randomTexts(500, 11);
      const expected = await loaded.encodeBatch(texts);
      texts.forEach((text, i) =>
        assertEquals(comparable(t.encode(text)), comparable(fromReference(expected[i])))
      );
    }
  },
});

Deno.test("encodings serialize to plain objects with every field (JSON.stringify)", () => {
  const e = chinese().encode("你好", "世界", { maxLength: 5 });
  const plain = JSON.parse(JSON.stringify(e));
  assertEquals(plain, {
    ids: e.ids,
    tokens: e.tokens,
    typeIds: e.typeIds,
    offsets: e.offsets,
    attentionMask: e.attentionMask,
    specialTokensMask: e.specialTokensMask,
    overflowed: true,
  });
});

Deno.test({
  name: "truncation strategies equal the live tokenizers package on a grid of pair lengths and limits",
  ignore: tk === null,
  async fn() {
    const ref = await referenceTokenizer(tk, CONFIGS["bert-base-chinese"]);
    const mine = chinese();
    const strategies = [["LongestFirst", "longest_first"], ["OnlyFirst", "only_first"], [
      "OnlySecond",
      "only_second",
    ]];
    for (const [theirs, ours] of strategies) {
      for (const maxLength of [3, 5, 8, 13]) {
        ref.setTruncation(maxLength, { strategy: theirs });
        for (let n1 = 0; n1 <= 14; n1 += 1) {
          for (let n2 = -1; n2 <= 14; n2 += 1) {
            // Words of one token (CJK) against words of two (the English "ab" → a ##b style): the early
            // stop counts tokens per word, so both shapes matter.
            const a = "一".repeat(n1), b = n2 < 0 ? undefined : "二 ab ".repeat(n2);
            let expected: unknown = "error";
            try {
              expected = comparable(fromReference(await ref.encode(a, b ?? null)));
            } catch { /* the reference refuses: so must bertforge */ }
            let actual: unknown = "error";
            try {
              actual = comparable(mine.encode(a, b, { maxLength, truncationStrategy: ours as "only_first" }));
            } catch (error) {
              if (!(error instanceof InvalidArgument)) throw error;
            }
            assertEquals(actual, expected, `${ours} maxLength=${maxLength} n1=${n1} n2=${n2}`);
          }
        }
      }
    }
    ref.disableTruncation();
  },
});

Deno.test({
  name:
    "every BMP code point (and every 16th astral one) tokenizes as in the live tokenizers package, in context",
  ignore: tk === null,
  async fn() {
    const codePoints: number[] = [];
    for (let cp = 0; cp < 0x110000; cp += cp < 0x10000 ? 1 : 16) {
      if (cp < 0xd800 || cp > 0xdfff) codePoints.push(cp);
    }
    for (const name of ["bert-base-chinese", "bert-base-chinese-cased"]) {
      const ref = await referenceTokenizer(tk, CONFIGS[name]);
      const mine = tokenizerFor(CONFIGS[name]);
      const failures: string[] = [];
      for (let k = 0; k < codePoints.length; k += 20000) {
        const chunk = codePoints.slice(k, k + 20000);
        // Alone, inside a word, and doubled: covers removal, splitting and normalization of the character.
        const texts = chunk.map((cp) => {
          const c = String.fromCodePoint(cp);
          return `a${c}b ${c} 1${c}${c}`;
        });
        const expected = await ref.encodeBatch(texts);
        for (let i = 0; i < texts.length; i++) {
          const e = mine.encode(texts[i]);
          const x = expected[i];
          if (
            JSON.stringify(e.ids) !== JSON.stringify(x.getIds()) ||
            JSON.stringify(e.offsets) !== JSON.stringify(x.getOffsets())
          ) {
            failures.push(
              `U+${chunk[i].toString(16).toUpperCase()}: ${x.getTokens().join(" ")} vs ${e.tokens.join(" ")}`,
            );
          }
        }
      }
      assertEquals(failures.slice(0, 10), [], `${name}: ${failures.length} code points differ`);
    }
  },
});

Deno.test({
  name: "fromTokenizerJson() reads a tokenizer.json saved by the tokenizers package and encodes identically",
  ignore: tk === null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "bf-wordpiece-" });
    try {
      for (const name of ["bert-base-chinese", "english-cased-strip"]) {
        const ref = await referenceTokenizer(tk, CONFIGS[name]);
        ref.save(`${dir}/${name}.json`);
        const loaded = WordPieceTokenizer.fromTokenizerJson(Deno.readTextFileSync(`${dir}/${name}.json`));
        const texts = randomTexts(300, 5);
        const expected = await ref.encodeBatch(texts);
        texts.forEach((text, i) =>
          assertEquals(
            comparable(loaded.encode(text)),
            comparable(fromReference(expected[i])),
            `${name}: ${text}`,
          )
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * WordPieceTokenizer: the exact behaviour of Hugging Face `BertTokenizerFast` (the `tokenizers` crate
 * with BertNormalizer, BertPreTokenizer, WordPiece and the BERT TemplateProcessing) in TypeScript.
 *
 *   "你好，BERT!" → [CLS] 你 好 ， be ##rt ! [SEP]     ids 101 872 1962 8024 8815 8716 106 102
 *
 * Pipeline per sequence: special tokens written literally in the text ("[MASK]") are cut out first and
 * kept whole, the rest goes through the basic tokenizer (basic.ts), then greedy longest-match WordPiece
 * (a word over 100 code points, or one that cannot be covered by vocab pieces, is a single [UNK]).
 * Pairs become `[CLS] A [SEP] B [SEP]` with type ids 0…0 1…1 after `longest_first` truncation.
 *
 * Offsets are [start, end) code point indices into the input string, the unit the `tokenizers` npm
 * package reports (`Array.from(text).slice(start, end).join("")` is the token's source text).
 */
import { createHash } from "node:crypto";
import { InvalidArgument } from "../errors.ts";
import {
  type BasicOptions,
  CharNormalizer,
  charNormalizer,
  resolveBasicOptions,
  type ResolvedBasicOptions,
  splitWords,
  WordBuffer,
} from "./basic.ts";
import { CONTINUATION_ROOT, INITIAL_ROOT, PieceTrie } from "./trie.ts";
import { formatVocabText, parseVocabText, SPECIAL_TOKENS, type Vocab, vocabFromObject } from "./vocab.ts";

/** One encoded input, the fields of a `tokenizers` Encoding. */
export interface Encoding {
  ids: number[];
  tokens: string[];
  /** 0 for the first sequence and its specials, 1 for the second sequence and its closing [SEP]. */
  typeIds: number[];
  /** [start, end) code point offsets into the input the token came from; [0, 0] for added specials/padding. */
  offsets: [number, number][];
  attentionMask: number[];
  /** 1 where the template added a special token or padding. */
  specialTokensMask: number[];
  /** True when truncation removed tokens. */
  overflowed?: boolean;
}

export interface EncodeOptions {
  /** Longest encoding, specials included. With `truncation` (the default once this is set) longer inputs are cut. */
  maxLength?: number;
  /** Cut to `maxLength`. @default true when maxLength is set */
  truncation?: boolean;
  /**
   * Which sequence loses tokens: the longer one first (`longest_first`), or only the first or second
   * (an input whose chosen sequence is too short to fit throws InvalidArgument). @default "longest_first"
   */
  truncationStrategy?: "longest_first" | "only_first" | "only_second";
  /** Pad with [PAD] up to `maxLength` (or, in a batch without maxLength, to the longest encoding). @default false */
  padToMaxLength?: boolean;
  /** Add [CLS]/[SEP] around the sequence(s). @default true */
  addSpecialTokens?: boolean;
}

/** A word of the basic tokenizer with its WordPiece pieces. */
export interface TokenizedWord {
  /** The normalized word (lowercased, accents stripped as configured). */
  word: string;
  /** [start, end) code point offsets of the word in the input. */
  start: number;
  end: number;
  pieces: string[];
  ids: number[];
}

export interface TokenizerOptions extends BasicOptions {
  /** Prefix of continuation pieces. @default "##" */
  continuingSubwordPrefix?: string;
  /** Longer words become a single [UNK]. @default 100 */
  maxInputCharsPerWord?: number;
  /** Tokens matched literally in the input before normalization. @default the BERT specials present in the vocab */
  addedTokens?: string[];
  unkToken?: string;
  clsToken?: string;
  sepToken?: string;
  padToken?: string;
  maskToken?: string;
}

/** Growable parallel arrays of pieces: id and [start, end) code point offsets. */
class PieceBuffer {
  ids = new Int32Array(1024);
  starts = new Int32Array(1024);
  ends = new Int32Array(1024);
  length = 0;

  push(id: number, start: number, end: number): void {
    if (this.length === this.ids.length) this.grow();
    this.ids[this.length] = id;
    this.starts[this.length] = start;
    this.ends[this.length] = end;
    this.length++;
  }

  private grow(): void {
    const size = this.ids.length * 2;
    const ids = new Int32Array(size), starts = new Int32Array(size), ends = new Int32Array(size);
    ids.set(this.ids);
    starts.set(this.starts);
    ends.set(this.ends);
    this.ids = ids;
    this.starts = starts;
    this.ends = ends;
  }
}

export class WordPieceTokenizer {
  readonly idToToken: string[];
  readonly vocab: Map<string, number>;
  readonly clsId: number;
  readonly sepId: number;
  readonly padId: number;
  readonly maskId: number;
  readonly unkId: number;
  readonly basicOptions: ResolvedBasicOptions;
  readonly continuingSubwordPrefix: string;
  readonly maxInputCharsPerWord: number;
  /** Literal tokens cut out of the input first, longest first so that the longest wins a tie. */
  readonly addedTokens: readonly string[];

  private readonly normalizer: CharNormalizer;
  private readonly trie: PieceTrie;
  private readonly word = new WordBuffer();
  private pieces = new PieceBuffer();
  private readonly pairPieces = new PieceBuffer();
  private readonly addedTokenIds: number[];
  private wordsOut: TokenizedWord[] | null = null;
  /** A sequence stops after the word that brings it to `tokenLimit` pieces (see encode). */
  private tokenLimit = Infinity;
  private readonly isStopped = () => this.stopped;
  private stopped = false;
  private readonly onWord: (chars: Int32Array, origins: Int32Array, length: number) => void;

  constructor(vocab: Vocab, options: TokenizerOptions = {}) {
    this.idToToken = vocab.idToToken;
    this.vocab = vocab.vocab;
    this.basicOptions = resolveBasicOptions(options);
    this.continuingSubwordPrefix = options.continuingSubwordPrefix ?? "##";
    this.maxInputCharsPerWord = options.maxInputCharsPerWord ?? 100;
    const special = (field: string, token: string) => {
      const id = this.vocab.get(token);
      if (id === undefined) {
        throw new InvalidArgument(
          `vocab: the ${field} ${JSON.stringify(token)} is missing from the vocabulary`,
        );
      }
      return id;
    };
    this.unkId = special("unk token", options.unkToken ?? "[UNK]");
    this.clsId = special("cls token", options.clsToken ?? "[CLS]");
    this.sepId = special("sep token", options.sepToken ?? "[SEP]");
    this.padId = special("pad token", options.padToken ?? "[PAD]");
    this.maskId = special("mask token", options.maskToken ?? "[MASK]");
    const added = options.addedTokens ?? SPECIAL_TOKENS.filter((t) => this.vocab.has(t));
    this.addedTokens = [...new Set(added)].filter((t) => t !== "").sort((a, b) => b.length - a.length);
    this.addedTokenIds = this.addedTokens.map((t) => special("added token", t));
    this.normalizer = charNormalizer(this.basicOptions);
    this.trie = new PieceTrie(this.vocab, this.continuingSubwordPrefix);
    this.onWord = (chars, origins, length) => this.wordPiece(chars, origins, length);
  }

  /** Reads a BERT vocab.txt. Malformed text throws InvalidArgument naming the line. */
  static fromVocabText(
    text: string,
    options?: { lowercase?: boolean; stripAccents?: boolean; tokenizeChineseChars?: boolean },
  ): WordPieceTokenizer {
    return new WordPieceTokenizer(parseVocabText(text), options);
  }

  /** Reads a Hugging Face tokenizer.json of a BERT WordPiece tokenizer. */
  static fromTokenizerJson(json: string): WordPieceTokenizer {
    return fromTokenizerJsonImpl(json);
  }

  /** Basic tokenizer + WordPiece, no [CLS]/[SEP]. */
  tokenize(text: string): string[] {
    this.pieces.length = 0;
    this.tokenizeInto(text);
    const tokens: string[] = [];
    for (let i = 0; i < this.pieces.length; i++) tokens.push(this.idToToken[this.pieces.ids[i]]);
    return tokens;
  }

  /**
   * Basic tokenizer + WordPiece into the tokenizer's own piece buffer: ids and [start, end) code point
   * offsets, no [CLS]/[SEP], nothing allocated per word (the bulk path of the sharding build). The
   * arrays are views valid until the next call on this tokenizer.
   */
  tokenizePieces(
    text: string,
  ): { readonly length: number; ids: Int32Array; starts: Int32Array; ends: Int32Array } {
    this.pieces.length = 0;
    this.tokenizeInto(text);
    return this.pieces;
  }

  /** Words of the basic tokenizer (and literal special tokens) with their pieces and input offsets. */
  tokenizeWords(text: string): TokenizedWord[] {
    const words: TokenizedWord[] = [];
    this.wordsOut = words;
    try {
      this.pieces.length = 0;
      this.tokenizeInto(text);
    } finally {
      this.wordsOut = null;
    }
    return words;
  }

  encode(text: string, pair?: string, options: EncodeOptions = {}): Encoding {
    const maxLength = options.maxLength;
    if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength < 0)) {
      throw new InvalidArgument(`maxLength: must be a non-negative integer, got ${maxLength}`);
    }
    // With truncation the reference stops tokenizing a sequence after the word that brings it to
    // maxLength tokens (nothing after could be kept). longest_first then compares the lengths of what
    // was tokenized, so the same early stop is needed for the same split between a pair.
    const truncating = (options.truncation ?? maxLength !== undefined) && maxLength !== undefined;
    const tokenLimit = truncating ? maxLength : Infinity;
    // only_second never cuts the first sequence, so the reference tokenizes all of it.
    const firstLimit = options.truncationStrategy === "only_second" ? Infinity : tokenLimit;
    this.sequencePieces(this.pieces, text, firstLimit);
    if (pair !== undefined) this.sequencePieces(this.pairPieces, pair, tokenLimit);
    const padTo = options.padToMaxLength && maxLength !== undefined ? maxLength : 0;
    return this.build(this.pieces, pair === undefined ? null : this.pairPieces, options, padTo);
  }

  /** Encodes every input; `padToMaxLength` without `maxLength` pads to the longest encoding of the batch. */
  encodeBatch(texts: string[] | [string, string][], options: EncodeOptions = {}): Encoding[] {
    const inputs = texts as (string | [string, string])[];
    const encodings: Encoding[] = new Array(inputs.length);
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i];
      encodings[i] = typeof input === "string"
        ? this.encode(input, undefined, options)
        : this.encode(input[0], input[1], options);
    }
    if (options.padToMaxLength && options.maxLength === undefined) {
      let longest = 0;
      for (const e of encodings) longest = Math.max(longest, (e as PackedEncoding).length);
      for (let i = 0; i < encodings.length; i++) {
        encodings[i] = (encodings[i] as PackedEncoding).padded(longest, this.padId);
      }
    }
    return encodings;
  }

  convertTokensToIds(tokens: string[]): number[] {
    return tokens.map((token) => this.vocab.get(token) ?? this.unkId);
  }

  convertIdsToTokens(ids: ArrayLike<number>): string[] {
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const token = this.idToToken[ids[i]];
      if (token === undefined) {
        throw new InvalidArgument(
          `ids[${i}]: ${ids[i]} is outside the vocabulary [0, ${this.idToToken.length})`,
        );
      }
      tokens.push(token);
    }
    return tokens;
  }

  /** vocab.txt content, one token a line in id order. */
  vocabText(): string {
    return formatVocabText(this.idToToken);
  }

  /** sha256 (hex) of vocabText(): the vocab's identity in lineage records. */
  hash(): string {
    return createHash("sha256").update(this.vocabText()).digest("hex");
  }

  /** tokenizer.json in the Hugging Face `tokenizers` format (loads with `Tokenizer.fromString`). */
  toTokenizerJson(): string {
    return toTokenizerJsonImpl(this);
  }

  /** tokenizer_config.json as `transformers` writes it for BertTokenizerFast. */
  tokenizerConfigJson(): string {
    const o = this.basicOptions;
    return JSON.stringify(
      {
        tokenizer_class: "BertTokenizer",
        do_lower_case: o.lowercase,
        strip_accents: o.stripAccents === o.lowercase ? null : o.stripAccents,
        tokenize_chinese_chars: o.tokenizeChineseChars,
        unk_token: this.idToToken[this.unkId],
        sep_token: this.idToToken[this.sepId],
        pad_token: this.idToToken[this.padId],
        cls_token: this.idToToken[this.clsId],
        mask_token: this.idToToken[this.maskId],
        model_max_length: 512,
      },
      null,
      2,
    );
  }

  // ---- internals -------------------------------------------------------------------------------

  /** Tokenizes one sequence into `into` (this.pieces or this.pairPieces). */
  private sequencePieces(into: PieceBuffer, text: string, tokenLimit: number): void {
    const saved = this.pieces;
    this.pieces = into;
    into.length = 0;
    this.tokenLimit = tokenLimit;
    try {
      this.tokenizeInto(text);
    } finally {
      this.tokenLimit = Infinity;
      this.pieces = saved;
    }
  }

  /** Appends the pieces of `text` to this.pieces: literal added tokens whole, the rest word by word. */
  private tokenizeInto(text: string): void {
    this.stopped = false;
    let from = 0;
    let origin = 0;
    while (from < text.length) {
      const match = this.nextAddedToken(text, from);
      const to = match ? match.index : text.length;
      if (to > from) {
        // Stops reading at the word that reaches tokenLimit, so a long text truncated to a few tokens costs
        // time in proportion to the tokens kept, not to its length.
        splitWords(this.normalizer, text, from, to, origin, this.word, this.onWord, this.isStopped);
        if (this.stopped) break;
        origin += countCodePoints(text, from, to);
      }
      if (!match) break;
      const tokenLength = countCodePoints(match.token, 0, match.token.length);
      // Literal specials are already tokens: kept until the stop, never the word that triggers it.
      if (!this.stopped) this.pieces.push(match.id, origin, origin + tokenLength);
      if (this.wordsOut) {
        this.wordsOut.push({
          word: match.token,
          start: origin,
          end: origin + tokenLength,
          pieces: [match.token],
          ids: [match.id],
        });
      }
      origin += tokenLength;
      from = match.index + match.token.length;
    }
  }

  /** Leftmost occurrence of an added token at or after `from`, the longest one on a tie. */
  private nextAddedToken(text: string, from: number): { index: number; token: string; id: number } | null {
    let best: { index: number; token: string; id: number } | null = null;
    for (let k = 0; k < this.addedTokens.length; k++) {
      const token = this.addedTokens[k];
      const index = text.indexOf(token, from);
      // addedTokens is sorted longest first, so a strictly smaller index is needed to win.
      if (index >= 0 && (best === null || index < best.index)) {
        best = { index, token, id: this.addedTokenIds[k] };
      }
    }
    return best;
  }

  /** Greedy longest-match WordPiece of one normalized word, appended to this.pieces. */
  private wordPiece(chars: Int32Array, origins: Int32Array, length: number): void {
    if (this.stopped) return;
    const pieces = this.pieces;
    const firstPiece = pieces.length;
    const wordStart = origins[0];
    const wordEnd = origins[length - 1] + 1;
    let bad = length > this.maxInputCharsPerWord;
    if (!bad) {
      const trie = this.trie;
      let position = 0;
      let root = INITIAL_ROOT;
      while (position < length) {
        let node = root;
        let bestId = -1;
        let bestEnd = position;
        for (let j = position; j < length; j++) {
          node = trie.child(node, chars[j]);
          if (node < 0) break;
          const id = trie.tokenAt(node);
          if (id >= 0) {
            bestId = id;
            bestEnd = j + 1;
          }
        }
        if (bestId < 0) {
          bad = true;
          break;
        }
        pieces.push(bestId, origins[position], origins[bestEnd - 1] + 1);
        position = bestEnd;
        root = CONTINUATION_ROOT;
      }
    }
    if (bad) {
      pieces.length = firstPiece;
      pieces.push(this.unkId, wordStart, wordEnd);
    }
    if (pieces.length >= this.tokenLimit) this.stopped = true;
    if (this.wordsOut) {
      const ids: number[] = [];
      const tokens: string[] = [];
      for (let i = firstPiece; i < pieces.length; i++) {
        ids.push(pieces.ids[i]);
        tokens.push(this.idToToken[pieces.ids[i]]);
      }
      let word = "";
      for (let i = 0; i < length; i++) word += String.fromCodePoint(chars[i]);
      this.wordsOut.push({ word, start: wordStart, end: wordEnd, pieces: tokens, ids });
    }
  }

  /** Truncation (longest_first), the [CLS] A [SEP] B [SEP] template, then padding to `padTo`. */
  private build(
    first: PieceBuffer,
    second: PieceBuffer | null,
    options: EncodeOptions,
    padTo: number,
  ): Encoding {
    const maxLength = options.maxLength;
    const addSpecial = options.addSpecialTokens ?? true;
    const truncation = options.truncation ?? maxLength !== undefined;
    let n1 = first.length;
    let n2 = second ? second.length : 0;
    let overflowed = false;
    const added = addSpecial ? (second ? 3 : 2) : 0;
    if (truncation && maxLength !== undefined) {
      if (maxLength < added) {
        throw new InvalidArgument(
          `maxLength: ${maxLength} leaves no room for the ${added} special tokens of a ${
            second ? "pair" : "single"
          } input`,
        );
      }
      const budget = maxLength - added;
      if (n1 + n2 > budget) {
        overflowed = true;
        const strategy = options.truncationStrategy ?? "longest_first";
        if (budget === 0) {
          // The reference empties both sequences whatever the strategy.
          n1 = 0;
          n2 = 0;
        } else if (strategy === "longest_first") {
          if (!second) n1 = budget;
          else [n1, n2] = longestFirst(n1, n2, budget);
        } else {
          const excess = n1 + n2 - budget;
          if (strategy === "only_second" && !second) {
            throw new InvalidArgument("truncationStrategy: only_second needs a sentence pair");
          }
          const which = strategy === "only_first" ? "first" : "second";
          const length = strategy === "only_first" ? n1 : n2;
          if (length <= excess) {
            throw new InvalidArgument(
              `maxLength: ${maxLength} needs ${excess} tokens cut but the ${which} sequence (${strategy}) has ${length}`,
            );
          }
          if (strategy === "only_first") n1 -= excess;
          else n2 -= excess;
        }
      }
    }
    const length = n1 + n2 + added;
    const total = Math.max(length, padTo);
    const packed = new Int32Array(4 * total);
    let at = 0;
    const special = (id: number, flags: number) => {
      packed[at] = id;
      packed[3 * total + at] = flags;
      at++;
    };
    if (addSpecial) special(this.clsId, SPECIAL);
    packed.set(first.ids.subarray(0, n1), at);
    packed.set(first.starts.subarray(0, n1), total + at);
    packed.set(first.ends.subarray(0, n1), 2 * total + at);
    at += n1;
    if (addSpecial) special(this.sepId, SPECIAL);
    if (second) {
      packed.set(second.ids.subarray(0, n2), at);
      packed.set(second.starts.subarray(0, n2), total + at);
      packed.set(second.ends.subarray(0, n2), 2 * total + at);
      packed.fill(SECOND, 3 * total + at, 3 * total + at + n2);
      at += n2;
      if (addSpecial) special(this.sepId, SPECIAL | SECOND);
    }
    while (at < total) special(this.padId, SPECIAL | PADDING);
    return new PackedEncoding(packed, total, this.idToToken, overflowed);
  }
}

// Per-token flags of a PackedEncoding.
const SPECIAL = 1;
const SECOND = 2;
const PADDING = 4;

/**
 * An Encoding kept as one Int32Array ([ids | starts | ends | flags], `length` each) whose public arrays
 * are built on first access. Building six arrays and a tuple per token for every input dominated
 * encodeBatch (allocation and GC, not tokenization); most callers read only `ids` and `typeIds`.
 * `toJSON()` gives the plain object.
 */
export class PackedEncoding implements Encoding {
  readonly length: number;
  overflowed?: boolean;
  #packed: Int32Array;
  #idToToken: readonly string[];
  #ids?: number[];
  #tokens?: string[];
  #typeIds?: number[];
  #offsets?: [number, number][];
  #attentionMask?: number[];
  #specialTokensMask?: number[];

  constructor(packed: Int32Array, length: number, idToToken: readonly string[], overflowed: boolean) {
    this.#packed = packed;
    this.length = length;
    this.#idToToken = idToToken;
    if (overflowed) this.overflowed = true;
  }

  get ids(): number[] {
    return this.#ids ??= this.#column(0, (v) => v);
  }
  get tokens(): string[] {
    if (!this.#tokens) {
      const tokens: string[] = new Array(this.length);
      for (let i = 0; i < this.length; i++) tokens[i] = this.#idToToken[this.#packed[i]];
      this.#tokens = tokens;
    }
    return this.#tokens;
  }
  get typeIds(): number[] {
    return this.#typeIds ??= this.#column(3, (flags) => (flags & SECOND ? 1 : 0));
  }
  get offsets(): [number, number][] {
    if (!this.#offsets) {
      const n = this.length, packed = this.#packed;
      const offsets: [number, number][] = new Array(n);
      for (let i = 0; i < n; i++) offsets[i] = [packed[n + i], packed[2 * n + i]];
      this.#offsets = offsets;
    }
    return this.#offsets;
  }
  get attentionMask(): number[] {
    return this.#attentionMask ??= this.#column(3, (flags) => (flags & PADDING ? 0 : 1));
  }
  get specialTokensMask(): number[] {
    return this.#specialTokensMask ??= this.#column(3, (flags) => flags & SPECIAL);
  }

  /** A copy padded with `padId` up to `length` tokens (itself when already that long). */
  padded(length: number, padId: number): PackedEncoding {
    if (length <= this.length) return this;
    const n = this.length, packed = this.#packed;
    const out = new Int32Array(4 * length);
    for (let column = 0; column < 4; column++) {
      out.set(packed.subarray(column * n, column * n + n), column * length);
    }
    out.fill(padId, n, length);
    out.fill(SPECIAL | PADDING, 3 * length + n, 4 * length);
    return new PackedEncoding(out, length, this.#idToToken, this.overflowed === true);
  }

  toJSON(): Encoding {
    const json: Encoding = {
      ids: this.ids,
      tokens: this.tokens,
      typeIds: this.typeIds,
      offsets: this.offsets,
      attentionMask: this.attentionMask,
      specialTokensMask: this.specialTokensMask,
    };
    if (this.overflowed) json.overflowed = true;
    return json;
  }

  #column(column: number, map: (value: number) => number): number[] {
    const n = this.length, base = column * n, packed = this.#packed;
    const out: number[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = map(packed[base + i]);
    return out;
  }
}

/**
 * `tokenizers`' longest_first split of `budget` between two sequences of n1 and n2 tokens: when cutting
 * the longer one suffices only it is cut; else both get half and the longer one the odd token.
 */
export function longestFirst(n1: number, n2: number, budget: number): [number, number] {
  const swapped = n1 > n2;
  const short = Math.min(n1, n2);
  let keepShort = short;
  let keepLong = short > budget ? short : Math.max(short, budget - short);
  if (keepShort + keepLong > budget) {
    keepShort = Math.floor(budget / 2);
    keepLong = keepShort + (budget % 2);
  }
  return swapped ? [keepLong, keepShort] : [keepShort, keepLong];
}

export function countCodePoints(text: string, from: number, to: number): number {
  let count = 0;
  for (let i = from; i < to; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < to) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) i++;
    }
    count++;
  }
  return count;
}

// ---- tokenizer.json ----------------------------------------------------------------------------

interface AddedTokenJson {
  id: number;
  content: string;
  single_word?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
  special?: boolean;
}

function toTokenizerJsonImpl(t: WordPieceTokenizer): string {
  const o = t.basicOptions;
  const cls = t.idToToken[t.clsId], sep = t.idToToken[t.sepId];
  const vocab: Record<string, number> = {};
  // Iterating the map (not idToToken) keeps the later id of a repeated token, as tokenizers does.
  const byId = [...t.vocab].sort((a, b) => a[1] - b[1]);
  for (const [token, id] of byId) vocab[token] = id;
  const addedTokens: AddedTokenJson[] = t.addedTokens
    .map((content) => ({
      id: t.vocab.get(content)!,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    }))
    .sort((a, b) => a.id - b.id);
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: {
      type: "BertNormalizer",
      clean_text: o.cleanText,
      handle_chinese_chars: o.tokenizeChineseChars,
      strip_accents: o.stripAccents === o.lowercase ? null : o.stripAccents,
      lowercase: o.lowercase,
    },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [
        { SpecialToken: { id: cls, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: sep, type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: cls, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: sep, type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
        { SpecialToken: { id: sep, type_id: 1 } },
      ],
      special_tokens: {
        [cls]: { id: cls, ids: [t.clsId], tokens: [cls] },
        [sep]: { id: sep, ids: [t.sepId], tokens: [sep] },
      },
    },
    decoder: { type: "WordPiece", prefix: t.continuingSubwordPrefix, cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: t.idToToken[t.unkId],
      continuing_subword_prefix: t.continuingSubwordPrefix,
      max_input_chars_per_word: t.maxInputCharsPerWord,
      vocab,
    },
  };
  return JSON.stringify(json, null, 2);
}

function fromTokenizerJsonImpl(text: string): WordPieceTokenizer {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InvalidArgument(`tokenizer.json: not valid JSON (${(error as Error).message})`);
  }
  const model = json.model as Record<string, unknown> | undefined;
  if (!model || model.type !== "WordPiece") {
    throw new InvalidArgument(
      `tokenizer.json model.type: expected "WordPiece", got ${JSON.stringify(model?.type)}`,
    );
  }
  if (!model.vocab || typeof model.vocab !== "object") {
    throw new InvalidArgument("tokenizer.json model.vocab: missing or not an object");
  }
  const vocab = vocabFromObject(model.vocab as Record<string, number>);
  const normalizer = json.normalizer as Record<string, unknown> | null | undefined;
  const options: TokenizerOptions = {};
  if (normalizer) {
    if (normalizer.type !== "BertNormalizer") {
      throw new InvalidArgument(
        `tokenizer.json normalizer.type: only "BertNormalizer" is supported, got ${
          JSON.stringify(normalizer.type)
        }`,
      );
    }
    options.lowercase = normalizer.lowercase !== false;
    if (typeof normalizer.strip_accents === "boolean") options.stripAccents = normalizer.strip_accents;
    options.tokenizeChineseChars = normalizer.handle_chinese_chars !== false;
    options.cleanText = normalizer.clean_text !== false;
  } else {
    options.lowercase = false;
    options.stripAccents = false;
    options.tokenizeChineseChars = false;
    options.cleanText = false;
  }
  const preTokenizer = json.pre_tokenizer as Record<string, unknown> | null | undefined;
  if (preTokenizer && preTokenizer.type !== "BertPreTokenizer") {
    throw new InvalidArgument(
      `tokenizer.json pre_tokenizer.type: only "BertPreTokenizer" is supported, got ${
        JSON.stringify(preTokenizer.type)
      }`,
    );
  }
  if (typeof model.unk_token === "string") options.unkToken = model.unk_token;
  if (typeof model.continuing_subword_prefix === "string") {
    options.continuingSubwordPrefix = model.continuing_subword_prefix;
  }
  if (typeof model.max_input_chars_per_word === "number") {
    options.maxInputCharsPerWord = model.max_input_chars_per_word;
  }
  const added = (json.added_tokens ?? []) as AddedTokenJson[];
  if (!Array.isArray(added)) throw new InvalidArgument("tokenizer.json added_tokens: not an array");
  options.addedTokens = added.map((t, i) => {
    if (typeof t?.content !== "string") {
      throw new InvalidArgument(`tokenizer.json added_tokens[${i}].content: missing`);
    }
    if (t.single_word || t.lstrip || t.rstrip) {
      throw new InvalidArgument(
        `tokenizer.json added_tokens[${i}] (${t.content}): single_word/lstrip/rstrip are not supported`,
      );
    }
    return t.content;
  });
  const post = json.post_processor as Record<string, unknown> | null | undefined;
  if (post?.type === "BertProcessing") {
    options.clsToken = (post.cls as [string, number])[0];
    options.sepToken = (post.sep as [string, number])[0];
  } else if (post?.type === "TemplateProcessing") {
    const single = post.single as Record<string, { id: string }>[];
    const specials = single.filter((p) => p.SpecialToken).map((p) => p.SpecialToken.id);
    if (specials.length === 2) [options.clsToken, options.sepToken] = specials;
  }
  for (const name of ["[PAD]", "[MASK]"] as const) {
    if (!vocab.vocab.has(name)) {
      throw new InvalidArgument(`tokenizer.json model.vocab: the special token ${name} is missing`);
    }
  }
  return new WordPieceTokenizer(vocab, options);
}

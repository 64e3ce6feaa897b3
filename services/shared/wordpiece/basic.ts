/**
 * The BERT basic tokenizer, character by character, as Hugging Face `tokenizers` does it
 * (`BertNormalizer` then `BertPreTokenizer`):
 *
 *   clean text      drop NUL, U+FFFD and "other" characters (Cc Cf Cn Co Cs except \t \n \r),
 *                   every whitespace becomes a word break
 *   chinese chars   each CJK ideograph is a word of its own
 *   strip accents   NFD, then drop non-spacing marks (Mn)        (follows `lowercase` unless set)
 *   lowercase       per code point (no final-sigma context, as Rust's `char::to_lowercase`)
 *   pre-tokenize    split on whitespace (removed) and punctuation (ASCII or Unicode P*, isolated)
 *
 * Every step maps one original code point to zero or more normalized code points, so a normalized
 * character always points back at exactly one original code point. Offsets are code point indices into
 * the original text: the unit the `tokenizers` npm package reports.
 *
 * Character classes are computed once per code point on first sight and cached in a flat table, so the
 * hot loop does one typed-array read per character and never runs a regular expression twice.
 */

/** Options of the basic tokenizer; the defaults are those of `BertTokenizerFast` for an uncased vocab. */
export interface BasicOptions {
  /** Lowercase every code point. @default true */
  lowercase?: boolean;
  /** NFD then drop non-spacing marks. @default the value of `lowercase` */
  stripAccents?: boolean;
  /** Put every CJK ideograph in a word of its own. @default true */
  tokenizeChineseChars?: boolean;
  /** Drop control characters and map every whitespace to a word break. @default true */
  cleanText?: boolean;
}

export interface ResolvedBasicOptions {
  lowercase: boolean;
  stripAccents: boolean;
  tokenizeChineseChars: boolean;
  cleanText: boolean;
}

export function resolveBasicOptions(options: BasicOptions = {}): ResolvedBasicOptions {
  const lowercase = options.lowercase ?? true;
  return {
    lowercase,
    stripAccents: options.stripAccents ?? lowercase,
    tokenizeChineseChars: options.tokenizeChineseChars ?? true,
    cleanText: options.cleanText ?? true,
  };
}

// Flags of one code point in the class table. KNOWN marks a computed entry: the table starts zeroed.
const KNOWN = 0x80;
/** Dropped by clean text: NUL, U+FFFD, "other" categories except \t \n \r. */
export const REMOVED = 0x01;
/** Rust `char::is_whitespace` (Unicode White_Space) plus \t \n \r: a word break. */
export const WHITESPACE = 0x02;
/** A CJK ideograph in the ranges BERT treats as Chinese. */
export const CJK = 0x04;
/** ASCII punctuation or Unicode P*: a word of its own. */
export const PUNCTUATION = 0x08;
/** Accent stripping or lowercasing changes this code point (option dependent). */
const CHANGED = 0x10;

const otherCategory = /^\p{C}$/u;
const whiteSpace = /^\p{White_Space}$/u;
const unicodePunctuation = /^\p{P}$/u;
const nonSpacingMark = /^\p{Mn}$/u;

/** The CJK Unified Ideographs blocks of `tokenizers`' `is_chinese_char` (bert.rs). */
export function isChineseChar(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b920 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f);
}

export function isAsciiPunctuation(cp: number): boolean {
  return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
    (cp >= 123 && cp <= 126);
}

/** Option-independent class of one code point (REMOVED | WHITESPACE | CJK | PUNCTUATION bits). */
export function classifyCodePoint(cp: number): number {
  const ch = String.fromCodePoint(cp);
  let flags = 0;
  const whitespace = cp === 9 || cp === 10 || cp === 13 || whiteSpace.test(ch);
  if (whitespace) flags |= WHITESPACE;
  else if (cp === 0 || cp === 0xfffd || otherCategory.test(ch)) flags |= REMOVED;
  if (isChineseChar(cp)) flags |= CJK;
  if (isAsciiPunctuation(cp) || unicodePunctuation.test(ch)) flags |= PUNCTUATION;
  return flags;
}

/**
 * One normalizer per option set: a lazily filled class table (1.1 MB, one byte per code point) plus the
 * replacement code points of the few characters that accent stripping or lowercasing changes.
 */
export class CharNormalizer {
  readonly options: ResolvedBasicOptions;
  private readonly table = new Uint8Array(0x110000);
  private readonly replacements = new Map<number, number[]>();

  constructor(options: ResolvedBasicOptions) {
    this.options = options;
  }

  /** Flags of `cp`: the class bits plus CHANGED when normalization rewrites it. */
  flags(cp: number): number {
    const cached = this.table[cp];
    if (cached & KNOWN) return cached;
    return this.compute(cp);
  }

  /** The normalized code points of `cp` (only meaningful when `flags(cp) & CHANGED`). */
  replacement(cp: number): number[] {
    this.flags(cp);
    return this.replacements.get(cp) ?? [cp];
  }

  private compute(cp: number): number {
    let flags = classifyCodePoint(cp);
    const normalized = this.normalizeCodePoint(cp);
    if (normalized.length !== 1 || normalized[0] !== cp) {
      flags |= CHANGED;
      this.replacements.set(cp, normalized);
    }
    this.table[cp] = flags | KNOWN;
    return flags | KNOWN;
  }

  private normalizeCodePoint(cp: number): number[] {
    let chars = [String.fromCodePoint(cp)];
    // Lone surrogates cannot be normalized; `tokenizers` never sees them (its input is UTF-8).
    if (cp >= 0xd800 && cp <= 0xdfff) return [cp];
    if (this.options.stripAccents) {
      chars = Array.from(chars[0].normalize("NFD")).filter((c) => !nonSpacingMark.test(c));
    }
    if (this.options.lowercase) {
      // Per code point: String.prototype.toLowerCase on a whole string applies final-sigma rules.
      chars = chars.flatMap((c) => Array.from(c.toLowerCase()));
    }
    return chars.map((c) => c.codePointAt(0)!);
  }
}

const normalizers = new Map<string, CharNormalizer>();

/** The shared normalizer for an option set (its tables fill up as text flows through). */
export function charNormalizer(options: ResolvedBasicOptions): CharNormalizer {
  const key = `${+options.lowercase}${+options.stripAccents}${+options.tokenizeChineseChars}${+options
    .cleanText}`;
  let normalizer = normalizers.get(key);
  if (!normalizer) {
    normalizer = new CharNormalizer(options);
    normalizers.set(key, normalizer);
  }
  return normalizer;
}

/**
 * Receives the words of a text. `chars` holds the normalized code points of the word in
 * `[0, length)`, `origins` the original code point index each came from; both buffers are reused, so
 * a sink copies what it keeps.
 */
export type WordSink = (chars: Int32Array, origins: Int32Array, length: number) => void;

/** Reusable buffers for one word, grown on demand. */
export class WordBuffer {
  chars = new Int32Array(256);
  origins = new Int32Array(256);
  length = 0;

  push(cp: number, origin: number): void {
    if (this.length === this.chars.length) {
      const chars = new Int32Array(this.length * 2);
      chars.set(this.chars);
      this.chars = chars;
      const origins = new Int32Array(this.length * 2);
      origins.set(this.origins);
      this.origins = origins;
    }
    this.chars[this.length] = cp;
    this.origins[this.length] = origin;
    this.length++;
  }
}

const CLASS_MASK = REMOVED | WHITESPACE | CJK | PUNCTUATION | CHANGED;

/**
 * Splits `text[from, to)` (UTF-16 indices) into normalized words and hands each to `sink`.
 * `originBase` is the code point index of `text[from]`, so origins stay absolute when the text is cut
 * into pieces around special tokens.
 */
export function splitWords(
  normalizer: CharNormalizer,
  text: string,
  from: number,
  to: number,
  originBase: number,
  word: WordBuffer,
  sink: WordSink,
): void {
  const { cleanText, tokenizeChineseChars } = normalizer.options;
  word.length = 0;
  let origin = originBase;
  for (let i = from; i < to; i++, origin++) {
    let cp = text.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < to) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        i++;
      }
    }
    // Plain lowercase ASCII letters and digits are most of any Latin text: skip the table.
    if ((cp >= 97 && cp <= 122) || (cp >= 48 && cp <= 57)) {
      word.push(cp, origin);
      continue;
    }
    const flags = normalizer.flags(cp) & CLASS_MASK;
    if (flags === 0) {
      word.push(cp, origin);
      continue;
    }
    if (flags & WHITESPACE) {
      // Without clean text a whitespace character still breaks words in the pre-tokenizer.
      if (word.length > 0) flush(word, sink);
      continue;
    }
    if ((flags & REMOVED) && cleanText) continue;
    const isolated = (flags & CJK) !== 0 && tokenizeChineseChars;
    if (isolated && word.length > 0) flush(word, sink);
    if (flags & CHANGED) {
      for (const normalized of normalizer.replacement(cp)) {
        pushNormalized(normalizer, normalized, origin, word, sink);
      }
    } else if (flags & PUNCTUATION) {
      if (word.length > 0) flush(word, sink);
      word.push(cp, origin);
      flush(word, sink);
    } else {
      word.push(cp, origin);
    }
    if (isolated && word.length > 0) flush(word, sink);
  }
  if (word.length > 0) flush(word, sink);
}

/** A code point produced by normalization still goes through the pre-tokenizer's splits. */
function pushNormalized(
  normalizer: CharNormalizer,
  cp: number,
  origin: number,
  word: WordBuffer,
  sink: WordSink,
): void {
  const flags = normalizer.flags(cp);
  if (flags & WHITESPACE) {
    if (word.length > 0) flush(word, sink);
  } else if (flags & PUNCTUATION) {
    if (word.length > 0) flush(word, sink);
    word.push(cp, origin);
    flush(word, sink);
  } else {
    word.push(cp, origin);
  }
}

function flush(word: WordBuffer, sink: WordSink): void {
  sink(word.chars, word.origins, word.length);
  word.length = 0;
}

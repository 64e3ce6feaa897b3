/**
 * WordPiece vocabulary training with the semantics of Hugging Face `WordPieceTrainer` (which is its BPE
 * trainer with a `##` continuation prefix):
 *
 *   1. count words: every line goes through the same basic tokenizer as encoding (so each CJK character
 *      is a word of its own and can only ever become a single-character token); special tokens written
 *      in the text are cut out first. Only the word counts are kept, never the text.
 *   2. vocab = special tokens, then the alphabet (every character seen, the `limitAlphabet` most frequent
 *      when set) in code point order, then `##c` for every character seen inside a word.
 *   3. merge: repeatedly join the most frequent adjacent pair (ties: the pair of smaller ids) into a new
 *      token (`a` + `##b` → `ab`, `##a` + `##b` → `##ab`) until the vocab holds `vocabSize` tokens or the
 *      best pair occurs fewer than `minFrequency` times.
 *
 * The reference iterates hash maps in random order when it numbers the `##c` tokens (and so breaks some
 * ties differently from run to run); here words are visited by descending count then code point order,
 * so training is deterministic.
 */
import { InvalidArgument } from "../errors.ts";
import {
  charNormalizer,
  CJK,
  classifyCodePoint,
  resolveBasicOptions,
  splitWords,
  WordBuffer,
} from "./basic.ts";
import { SPECIAL_TOKENS } from "./vocab.ts";
import { WordPieceTokenizer } from "./wordpiece.ts";

export interface TrainProgress {
  stage: "count" | "merge" | "done";
  /** Lines read so far. */
  lines: number;
  /** Distinct words counted so far. */
  words: number;
  /** Tokens in the vocabulary so far (merge and done stages). */
  vocabSize: number;
  /** The requested vocabulary size. */
  targetVocabSize: number;
}

export interface TrainOptions {
  /** Stop once the vocabulary holds this many tokens (special tokens and alphabet included). */
  vocabSize: number;
  /** A pair must occur at least this often to be merged. @default 2 */
  minFrequency?: number;
  /** Lowercase (and strip accents) while counting, as the tokenizer will when encoding. @default true */
  lowercase?: boolean;
  /** Strip accents; follows `lowercase` unless set. */
  stripAccents?: boolean;
  /** @default ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] */
  specialTokens?: string[];
  /** Keep at most this many distinct characters (the most frequent). @default no limit */
  limitAlphabet?: number;
  /** CJK characters do not count against `limitAlphabet` (all are kept): a Chinese corpus needs them all. */
  limitAlphabetExemptsCjk?: boolean;
  /** Called every `progressEvery` lines while counting, every 100 merges, and once at the end. */
  onProgress?: (progress: TrainProgress) => void;
  /** @default 10000 */
  progressEvery?: number;
  /** Stops training with the signal's reason. */
  signal?: AbortSignal;
}

/** Trains a WordPiece vocabulary on `lines` (streamed: only word counts are kept). */
export async function trainWordPiece(
  lines: AsyncIterable<string> | Iterable<string>,
  options: TrainOptions,
): Promise<WordPieceTokenizer> {
  const { vocabSize } = options;
  if (!Number.isInteger(vocabSize) || vocabSize < 1) {
    throw new InvalidArgument(`vocabSize: must be a positive integer, got ${vocabSize}`);
  }
  const minFrequency = options.minFrequency ?? 2;
  if (!Number.isInteger(minFrequency) || minFrequency < 0) {
    throw new InvalidArgument(`minFrequency: must be a non-negative integer, got ${minFrequency}`);
  }
  if (
    options.limitAlphabet !== undefined &&
    (!Number.isInteger(options.limitAlphabet) || options.limitAlphabet < 0)
  ) {
    throw new InvalidArgument(`limitAlphabet: must be a non-negative integer, got ${options.limitAlphabet}`);
  }
  const specialTokens = options.specialTokens ?? [...SPECIAL_TOKENS];
  for (const token of specialTokens) {
    if (token === "" || /\s/u.test(token)) {
      throw new InvalidArgument(`specialTokens: ${JSON.stringify(token)} is empty or holds whitespace`);
    }
  }
  const basic = resolveBasicOptions({
    lowercase: options.lowercase ?? true,
    stripAccents: options.stripAccents,
  });
  const progressEvery = options.progressEvery ?? 10000;
  const report = (p: TrainProgress) => options.onProgress?.(p);

  // 1. Word counts.
  const counts = await countWords(lines, basic, specialTokens, options, progressEvery);
  const progress: TrainProgress = {
    stage: "merge",
    lines: counts.lines,
    words: counts.words.size,
    vocabSize: 0,
    targetVocabSize: vocabSize,
  };

  // 2. Special tokens, alphabet, continuation characters.
  const idToToken: string[] = [];
  const tokenToId = new Map<string, number>();
  const add = (token: string) => {
    let id = tokenToId.get(token);
    if (id === undefined) {
      id = idToToken.length;
      idToToken.push(token);
      tokenToId.set(token, id);
    }
    return id;
  };
  for (const token of specialTokens) add(token);
  const charCounts = new Map<string, number>();
  for (const [word, count] of counts.words) {
    for (const ch of word) charCounts.set(ch, (charCounts.get(ch) ?? 0) + count);
  }
  let alphabet = [...charCounts.entries()];
  const exempt = options.limitAlphabetExemptsCjk
    ? alphabet.filter(([ch]) => classifyCodePoint(ch.codePointAt(0)!) & CJK)
    : [];
  if (exempt.length > 0) alphabet = alphabet.filter(([ch]) => !(classifyCodePoint(ch.codePointAt(0)!) & CJK));
  if (options.limitAlphabet !== undefined && alphabet.length > options.limitAlphabet) {
    alphabet.sort((a, b) => b[1] - a[1] || a[0].codePointAt(0)! - b[0].codePointAt(0)!);
    alphabet = alphabet.slice(0, options.limitAlphabet);
  }
  alphabet.push(...exempt);
  alphabet.sort((a, b) => a[0].codePointAt(0)! - b[0].codePointAt(0)!);
  for (const [ch] of alphabet) add(ch);

  const wordList = [...counts.words.entries()].sort((a, b) =>
    b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
  );
  const words: number[][] = [];
  const wordCounts: number[] = [];
  for (const [word, count] of wordList) {
    const symbols: number[] = [];
    let first = true;
    for (const ch of word) {
      // Characters cut by limitAlphabet are dropped from the word, as the reference does.
      if (tokenToId.has(ch)) symbols.push(add(first ? ch : PREFIX + ch));
      first = false;
    }
    words.push(symbols);
    wordCounts.push(count);
  }
  counts.words.clear();

  // 3. Merges.
  const pairCounts = new Map<number, number>();
  let whereToUpdate = new Map<number, Set<number>>();
  for (let w = 0; w < words.length; w++) {
    const symbols = words[w];
    for (let i = 0; i + 1 < symbols.length; i++) {
      const pair = pairKey(symbols[i], symbols[i + 1]);
      pairCounts.set(pair, (pairCounts.get(pair) ?? 0) + wordCounts[w]);
      let positions = whereToUpdate.get(pair);
      if (!positions) whereToUpdate.set(pair, positions = new Set());
      positions.add(w);
    }
  }
  const queue = new MergeQueue();
  const pushUpdates = () => {
    for (const [pair, positions] of whereToUpdate) {
      const count = pairCounts.get(pair)!;
      if (count > 0) queue.push({ pair, count, positions });
    }
    whereToUpdate = new Map();
  };
  pushUpdates();
  let merges = 0;
  while (idToToken.length < vocabSize) {
    options.signal?.throwIfAborted();
    const top = queue.pop();
    if (!top) break;
    const current = pairCounts.get(top.pair)!;
    if (top.count !== current) {
      top.count = current;
      queue.push(top);
      continue;
    }
    if (top.count < 1 || minFrequency > top.count) break;
    const left = Math.floor(top.pair / PAIR_BASE), right = top.pair % PAIR_BASE;
    const rightToken = idToToken[right];
    const newToken = idToToken[left] +
      (rightToken.startsWith(PREFIX) ? rightToken.slice(PREFIX.length) : rightToken);
    const newId = add(newToken);
    for (const w of top.positions) {
      for (const [pair, change] of mergeWord(words[w], left, right, newId)) {
        pairCounts.set(pair, (pairCounts.get(pair) ?? 0) + change * wordCounts[w]);
        if (change > 0) {
          let positions = whereToUpdate.get(pair);
          if (!positions) whereToUpdate.set(pair, positions = new Set());
          positions.add(w);
        }
      }
    }
    pushUpdates();
    if (++merges % 100 === 0) {
      progress.vocabSize = idToToken.length;
      report({ ...progress });
      // Let a job's cancel and other callers in between long merge runs.
      await Promise.resolve();
    }
  }
  report({ ...progress, stage: "done", vocabSize: idToToken.length });
  return new WordPieceTokenizer({ idToToken, vocab: tokenToId }, { ...basic, addedTokens: specialTokens });
}

const PREFIX = "##";
/** Pairs of ids packed in one number (ids stay far below 2^26). */
const PAIR_BASE = 2 ** 26;
const pairKey = (a: number, b: number) => a * PAIR_BASE + b;

async function countWords(
  lines: AsyncIterable<string> | Iterable<string>,
  basic: ReturnType<typeof resolveBasicOptions>,
  specialTokens: string[],
  options: TrainOptions,
  progressEvery: number,
): Promise<{ words: Map<string, number>; lines: number }> {
  const normalizer = charNormalizer(basic);
  const buffer = new WordBuffer();
  const words = new Map<string, number>();
  // Single-character words (every CJK character, every punctuation mark) are most words of a Chinese
  // corpus: count them in a flat table instead of building a string and a map entry each time.
  const singles = new Float64Array(0x30000);
  const sink = (chars: Int32Array, _origins: Int32Array, length: number) => {
    if (length === 1 && chars[0] < singles.length) {
      singles[chars[0]]++;
      return;
    }
    let word = "";
    for (let i = 0; i < length; i++) word += String.fromCodePoint(chars[i]);
    words.set(word, (words.get(word) ?? 0) + 1);
  };
  let lineCount = 0;
  for await (let line of lines) {
    options.signal?.throwIfAborted();
    for (const token of specialTokens) if (line.includes(token)) line = line.split(token).join(" ");
    splitWords(normalizer, line, 0, line.length, 0, buffer, sink);
    if (++lineCount % progressEvery === 0) {
      options.onProgress?.({
        stage: "count",
        lines: lineCount,
        words: words.size, // multi-character words only while counting
        vocabSize: 0,
        targetVocabSize: options.vocabSize,
      });
    }
  }
  for (let cp = 0; cp < singles.length; cp++) {
    if (singles[cp] > 0) {
      const word = String.fromCodePoint(cp);
      words.set(word, (words.get(word) ?? 0) + singles[cp]);
    }
  }
  return { words, lines: lineCount };
}

/**
 * Replaces every non-overlapping (left, right) in `symbols` by `replacement`, left to right, and returns
 * the pair count changes (the reference's `Word::merge`; the merged pair's own count is left alone).
 */
function mergeWord(symbols: number[], left: number, right: number, replacement: number): [number, number][] {
  const changes: [number, number][] = [];
  let i = 0;
  while (i < symbols.length) {
    if (symbols[i] === left && i + 1 < symbols.length && symbols[i + 1] === right) {
      if (i > 0) {
        changes.push([pairKey(symbols[i - 1], left), -1]);
        changes.push([pairKey(symbols[i - 1], replacement), 1]);
      }
      symbols.splice(i, 2, replacement);
      if (i < symbols.length - 1) {
        changes.push([pairKey(right, symbols[i + 1]), -1]);
        changes.push([pairKey(replacement, symbols[i + 1]), 1]);
      }
    }
    i++;
  }
  return changes;
}

interface Merge {
  pair: number;
  count: number;
  positions: Set<number>;
}

/** Max-heap of merges: highest count first, then the smaller pair (by left id, then right id). */
class MergeQueue {
  private heap: Merge[] = [];

  push(merge: Merge): void {
    const heap = this.heap;
    heap.push(merge);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }

  pop(): Merge | undefined {
    const heap = this.heap;
    if (heap.length === 0) return undefined;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let best = i;
        if (l < heap.length && before(heap[l], heap[best])) best = l;
        if (r < heap.length && before(heap[r], heap[best])) best = r;
        if (best === i) break;
        [heap[i], heap[best]] = [heap[best], heap[i]];
        i = best;
      }
    }
    return top;
  }
}

function before(a: Merge, b: Merge): boolean {
  return a.count !== b.count ? a.count > b.count : a.pair < b.pair;
}

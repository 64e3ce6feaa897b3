/**
 * One block of documents (raw text) → encoded shard records. The unit of work of a build: workers
 * run it in parallel, and it depends only on the block's text, its index and the settings, so the
 * output is the same whatever the number of workers.
 *
 * @module
 */
import type { Jieba } from "@node-rs/jieba";
import { InvalidArgument } from "../shared/errors.ts";
import { recordBytesOf, writeRecordFields } from "../shared/shards/format.ts";
import type { MaskingSettings } from "../shared/shards/masking.ts";
import { Rng } from "../shared/shards/rng.ts";
import { CJK, classifyCodePoint } from "../shared/wordpiece/basic.ts";
import type { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import {
  type AssembledInstance,
  assembleInstancesFromDocument,
  type Document,
  type InstanceSettings,
  sentenceCount,
} from "./instances.ts";

/** The settings a block needs (a subset of the manifest's PretrainingSettings). */
export interface BlockSettings {
  seed: number;
  maxSeqLength: number;
  maxPredictionsPerSeq: number;
  maskedLmProb: number;
  shortSeqProb: number;
  randomNextProb: number;
  dupeFactor: number;
  wholeWordMask: boolean;
  /** Share of documents held out: their instances form the eval split. */
  evalFraction: number;
}

export interface BlockStats {
  documents: number;
  sentences: number;
  instances: number;
  tokens: number;
  maskedTokens: number;
  randomNext: number;
}

/** Encoded records of one split, back to back, in shuffled order. */
export interface EncodedRecords {
  records: Uint8Array;
  /** Start of each record in `records`. */
  offsets: Uint32Array;
  stats: BlockStats;
}

export interface BlockResult {
  index: number;
  train: EncodedRecords;
  eval: EncodedRecords;
}

/** A block as the reader cuts it: the text of whole documents, and where it came from. */
export interface RawBlock {
  /**
   * UTF-8 lines, each ending in "\n"; a blank line ends a document (documentsOf in block.ts reads it).
   * Blank lines and long leading or trailing whitespace are left out, so its size stays near the block's.
   */
  bytes: Uint8Array;
  /** The corpus file of the bytes from `at` on, and the line there (to name a file that is not UTF-8). */
  files: { name: string; at: number; line: number }[];
}

const blockDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * The documents of a block, each a list of trimmed lines (build.ts cut the block at line and
 * document boundaries). A block that is not UTF-8 is INVALID_ARGUMENT naming its file.
 */
export function documentsOf(block: RawBlock): string[][] {
  let text: string;
  try {
    text = blockDecoder.decode(block.bytes);
  } catch (error) {
    if (error instanceof TypeError) throw notUtf8(block);
    throw error;
  }
  const documents: string[][] = [];
  let document: string[] = [];
  let from = 0;
  for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", from)) {
    const line = text.slice(from, nl).trim();
    from = nl + 1;
    if (line !== "") document.push(line);
    else if (document.length > 0) {
      documents.push(document);
      document = [];
    }
  }
  if (document.length > 0) documents.push(document);
  return documents;
}

/** Names the file whose part of the block does not decode. */
function notUtf8(block: RawBlock): InvalidArgument {
  const { files, bytes } = block;
  for (let f = 0; f < files.length; f++) {
    const part = bytes.subarray(files[f]!.at, f + 1 < files.length ? files[f + 1]!.at : bytes.length);
    try {
      blockDecoder.decode(part);
    } catch {
      return new InvalidArgument(
        `corpus file ${files[f]!.name}: not valid UTF-8 text (at or after line ${files[f]!.line})`,
      );
    }
  }
  return new InvalidArgument(`corpus file ${files[0]?.name ?? "?"}: not valid UTF-8 text`);
}

// Terminal punctuation, then any closing quotes or brackets; a Western full stop only before a space.
const SENTENCE_END = /(?:[。！？!?；]|…+|\.(?=[”’」』）)"'\]]*\s))[”’」』）)"'\]]*/g;

/** Splits a line holding a whole document into sentences at Chinese and Western sentence punctuation. */
export function splitSentences(line: string): string[] {
  const sentences: string[] = [];
  let from = 0;
  for (const match of line.matchAll(SENTENCE_END)) {
    const end = match.index! + match[0].length;
    const sentence = line.slice(from, end).trim();
    if (sentence) sentences.push(sentence);
    from = end;
  }
  const rest = line.slice(from).trim();
  if (rest) sentences.push(rest);
  return sentences;
}

let sharedJieba: Promise<Jieba> | null = null;
/**
 * jieba with its default dictionary, loaded once per thread and only by builds that mask whole words:
 * the native module and its 5 MB dictionary cost every worker memory and start-up time otherwise.
 */
export function defaultJieba(): Promise<Jieba> {
  sharedJieba ??= (async () => {
    const { Jieba } = await import("@node-rs/jieba");
    const { dict } = await import("@node-rs/jieba/dict");
    return Jieba.withDict(dict);
  })();
  return sharedJieba;
}

/** UTF-16 length → code point count (what tokenizer offsets count). */
function codePoints(text: string): number {
  let count = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xdc00 && unit <= 0xdfff) count--;
  }
  return count;
}

const ARENA_TOKENS = 1 << 20;

/**
 * Tokenizes the sentences of one document into one flat {@linkcode Document}. `wordStarts` marks the
 * first piece of every word: WordPiece `##` pieces continue a word, and with `jieba` a Chinese character
 * continues the jieba word of the character before it (Chinese-BERT-wwm's rule), so whole-word masking
 * picks all of them or none. Empty sentences (nothing but whitespace or control characters) are left
 * out, as the reference leaves them out.
 */
export class DocumentTokenizer {
  #ids = new Uint32Array(4096);
  #wordStarts = new Uint8Array(4096);
  #length = 0;
  #sentenceStarts: number[] = [0];

  /** 1 for ids of continuation pieces (`##...`): they never start a word. */
  readonly #continuation: Uint8Array;

  constructor(readonly tokenizer: WordPieceTokenizer, readonly jieba: Jieba | null) {
    const prefix = tokenizer.continuingSubwordPrefix;
    this.#continuation = Uint8Array.from(
      tokenizer.idToToken,
      (token) => (token.length > prefix.length && token.startsWith(prefix) ? 1 : 0),
    );
  }

  addSentence(text: string): void {
    // The tokenizer's piece buffer rather than tokenizeWords: no object per word (they took a third of
    // the build's time). A piece starts a word unless it is a `##` continuation, or a Chinese character
    // inside the jieba word of the character before it.
    const pieces = this.tokenizer.tokenizePieces(text);
    let boundaries: Uint8Array | null = null;
    let cjkAt: Uint8Array | null = null;
    if (this.jieba) {
      const length = codePoints(text);
      boundaries = new Uint8Array(length + 1);
      cjkAt = new Uint8Array(length);
      for (let i = 0, cp = 0; i < text.length; i++, cp++) {
        const c = text.codePointAt(i)!;
        if (c > 0xffff) i++;
        cjkAt[cp] = (classifyCodePoint(c) & CJK) !== 0 ? 1 : 0;
      }
      let at = 0;
      for (const word of this.jieba.cut(text, true)) {
        boundaries[at] = 1;
        at += codePoints(word);
      }
    }
    this.#reserve(pieces.length);
    let previousCjkEnd = -1;
    for (let p = 0; p < pieces.length; p++) {
      const id = pieces.ids[p]!, start = pieces.starts[p]!, end = pieces.ends[p]!;
      const cjk = cjkAt !== null && end - start === 1 && cjkAt[start] === 1;
      const continuesJiebaWord = cjk && previousCjkEnd === start && !boundaries![start];
      this.#ids[this.#length] = id;
      this.#wordStarts[this.#length] = this.#continuation[id] || continuesJiebaWord ? 0 : 1;
      this.#length++;
      previousCjkEnd = cjk ? end : -1;
    }
    this.#endSentence();
  }

  #endSentence(): void {
    if (this.#length > this.#sentenceStarts[this.#sentenceStarts.length - 1]!) {
      this.#sentenceStarts.push(this.#length);
    }
  }

  // Documents are views into arenas of a few MB, reused block after block, rather than arrays of their
  // own: thousands of small off-heap buffers per block made a worker's memory balloon before V8 freed them.
  #arenas: { ids: Uint32Array; wordStarts: Uint8Array; starts: Uint32Array }[] = [];
  #arena = -1;
  #arenaUsed = 0;
  #arenaStartsUsed = 0;

  /** Forgets every document handed out so far: their arrays get overwritten by the next ones. */
  reuseArenas(): void {
    this.#arena = -1;
    this.#arenaUsed = this.#arenaStartsUsed = 0;
  }

  /** The document so far (null when it has no tokens); the tokenizer is empty afterwards. */
  finish(): Document | null {
    let document: Document | null = null;
    const length = this.#length, starts = this.#sentenceStarts.length;
    if (starts > 1) {
      let arena = this.#arenas[this.#arena];
      if (
        !arena || this.#arenaUsed + length > arena.ids.length ||
        this.#arenaStartsUsed + starts > arena.starts.length
      ) {
        this.#arena++;
        arena = this.#arenas[this.#arena];
        if (!arena || arena.ids.length < length || arena.starts.length < starts) {
          const size = Math.max(ARENA_TOKENS, length);
          arena = {
            ids: new Uint32Array(size),
            wordStarts: new Uint8Array(size),
            starts: new Uint32Array(Math.max(ARENA_TOKENS / 8, starts)),
          };
          this.#arenas[this.#arena] = arena;
        }
        this.#arenaUsed = this.#arenaStartsUsed = 0;
      }
      const at = this.#arenaUsed, startsAt = this.#arenaStartsUsed;
      const ids = arena.ids.subarray(at, at + length);
      ids.set(this.#ids.subarray(0, length));
      const wordStarts = arena.wordStarts.subarray(at, at + length);
      wordStarts.set(this.#wordStarts.subarray(0, length));
      const sentenceStarts = arena.starts.subarray(startsAt, startsAt + starts);
      sentenceStarts.set(this.#sentenceStarts);
      this.#arenaUsed += length;
      this.#arenaStartsUsed += starts;
      document = { ids, wordStarts, sentenceStarts };
    }
    this.#length = 0;
    this.#sentenceStarts = [0];
    return document;
  }

  #reserve(extra: number): void {
    if (this.#length + extra <= this.#ids.length) return;
    const size = Math.max(this.#ids.length * 2, this.#length + extra);
    const ids = new Uint32Array(size), wordStarts = new Uint8Array(size);
    ids.set(this.#ids.subarray(0, this.#length));
    wordStarts.set(this.#wordStarts.subarray(0, this.#length));
    this.#ids = ids;
    this.#wordStarts = wordStarts;
  }
}

/** Growable byte buffer of encoded records. */
class RecordBuffer {
  bytes = new Uint8Array(1 << 20);
  view = new DataView(this.bytes.buffer);
  length = 0;
  offsets = new Uint32Array(1 << 14);
  count = 0;

  constructor(readonly idBytes: 2 | 4) {}

  reset(): void {
    this.length = 0;
    this.count = 0;
  }

  add(x: AssembledInstance): void {
    const need = recordBytesOf(x.length, x.masked, this.idBytes, x.wholeWord);
    if (this.length + need > this.bytes.length) {
      const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + need));
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    if (this.count === this.offsets.length) {
      const grown = new Uint32Array(this.offsets.length * 2);
      grown.set(this.offsets);
      this.offsets = grown;
    }
    this.offsets[this.count++] = this.length;
    this.length = writeRecordFields(
      this.view,
      this.length,
      x.ids,
      x.length,
      x.segmentALength,
      x.isRandomNext,
      x.positions,
      x.labels,
      x.masked,
      x.wholeWord ? x.wordStarts : undefined,
      this.idBytes,
    );
  }
}

/** What one thread reuses from block to block: tokenizer state, document arenas, the record buffer. */
export class BlockWorkspace {
  readonly documentTokenizer: DocumentTokenizer;
  readonly records: RecordBuffer;

  private constructor(tokenizer: WordPieceTokenizer, jieba: Jieba | null, idBytes: 2 | 4) {
    this.documentTokenizer = new DocumentTokenizer(tokenizer, jieba);
    this.records = new RecordBuffer(idBytes);
  }

  static async create(
    tokenizer: WordPieceTokenizer,
    settings: BlockSettings,
    idBytes: 2 | 4,
  ): Promise<BlockWorkspace> {
    return new BlockWorkspace(tokenizer, settings.wholeWordMask ? await defaultJieba() : null, idBytes);
  }
}

/**
 * Turns the documents of block `index` (each a list of lines) into shuffled, encoded records: documents
 * shuffled, `dupeFactor` passes over them with fresh masks, instances shuffled, as the reference does
 * over its whole corpus, here within the block. Held-out documents (`evalFraction`) make the eval split
 * the same way, from a generator of their own, so the training split does not depend on the fraction's
 * draws.
 */
export function processBlock(
  index: number,
  rawDocuments: readonly string[][],
  tokenizer: WordPieceTokenizer,
  settings: BlockSettings,
  workspace: BlockWorkspace,
): BlockResult {
  const trainDocuments: Document[] = [];
  const evalDocuments: Document[] = [];
  let sentences = 0;
  const holdOut = Rng.seeded(settings.seed, index, 0xe7a1);
  const documentTokenizer = workspace.documentTokenizer;
  documentTokenizer.reuseArenas();
  for (const lines of rawDocuments) {
    const heldOut = holdOut.random() < settings.evalFraction;
    // A document given as one line is split into its sentences, so NSP still sees sentence boundaries.
    const texts = lines.length === 1 ? splitSentences(lines[0]!) : lines;
    for (const text of texts) documentTokenizer.addSentence(text);
    const document = documentTokenizer.finish();
    if (document) {
      (heldOut ? evalDocuments : trainDocuments).push(document);
      sentences += sentenceCount(document);
    }
  }
  const masking: MaskingSettings = {
    maskedLmProb: settings.maskedLmProb,
    maxPredictionsPerSeq: settings.maxPredictionsPerSeq,
    vocabSize: tokenizer.idToToken.length,
    maskId: tokenizer.maskId,
    clsId: tokenizer.clsId,
    sepId: tokenizer.sepId,
    wholeWord: settings.wholeWordMask,
  };
  const instanceSettings: InstanceSettings = {
    maxSeqLength: settings.maxSeqLength,
    shortSeqProb: settings.shortSeqProb,
    randomNextProb: settings.randomNextProb,
    masking,
  };
  const train = instancesOf(
    trainDocuments,
    Rng.seeded(settings.seed, index),
    instanceSettings,
    settings,
    workspace,
  );
  const held = instancesOf(
    evalDocuments,
    Rng.seeded(settings.seed, index, 0xe7a2),
    instanceSettings,
    settings,
    workspace,
  );
  train.stats.sentences = sentences;
  return { index, train, eval: held };
}

function instancesOf(
  documents: Document[],
  rng: Rng,
  instanceSettings: InstanceSettings,
  settings: BlockSettings,
  workspace: BlockWorkspace,
): EncodedRecords {
  const stats: BlockStats = {
    documents: documents.length,
    sentences: 0,
    instances: 0,
    tokens: 0,
    maskedTokens: 0,
    randomNext: 0,
  };
  rng.shuffle(documents);
  const buffer = workspace.records;
  buffer.reset();
  const emit = (x: AssembledInstance) => {
    buffer.add(x);
    stats.tokens += x.length;
    stats.maskedTokens += x.masked;
    if (x.isRandomNext) stats.randomNext++;
  };
  for (let dupe = 0; dupe < settings.dupeFactor; dupe++) {
    for (let d = 0; d < documents.length; d++) {
      assembleInstancesFromDocument(documents, d, instanceSettings, rng, emit);
    }
  }
  const count = buffer.count;
  stats.instances = count;

  // The reference shuffles its instances before writing; records are moved, not re-encoded.
  const order = new Uint32Array(count);
  for (let k = 0; k < count; k++) order[k] = k;
  rng.shuffle(order);
  const records = new Uint8Array(buffer.length);
  const offsets = new Uint32Array(count);
  const source = buffer.bytes, starts = buffer.offsets;
  let at = 0;
  for (let i = 0; i < count; i++) {
    const k = order[i]!;
    const start = starts[k]!;
    const end = k + 1 < count ? starts[k + 1]! : buffer.length;
    offsets[i] = at;
    records.set(source.subarray(start, end), at);
    at += end - start;
  }
  return { records, offsets, stats };
}

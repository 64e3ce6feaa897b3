/**
 * One block of documents (raw text) → encoded shard records. The unit of work of a build: workers
 * run it in parallel, and it depends only on the block's text, its index and the settings, so the
 * output is the same whatever the number of workers.
 *
 * @module
 */
import type { Jieba } from "@node-rs/jieba";
import { InvalidArgument } from "../shared/errors.ts";
import { idBytesFor, recordBytesOf, writeRecordFields } from "../shared/shards/format.ts";
import type { MaskingSettings } from "../shared/shards/masking.ts";
import { Rng } from "../shared/shards/rng.ts";
import { CJK, classifyCodePoint } from "../shared/wordpiece/basic.ts";
import type { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import {
  type AssembledInstance,
  assembleInstances,
  type Document,
  DocumentSet,
  type InstanceSettings,
  RowPacker,
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
  /** Packed rows (RowPacker in instances.ts) instead of NSP pairs. */
  packed: boolean;
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
  /** The source the block's documents came from (its index in the build's sources). */
  source: number;
  /** Documents of the block with any token, and their characters (code points), before weighting. */
  documentsRead: number;
  characters: number;
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
  /** Index of the source in the build, and of the block among that source's blocks (seeds its weighting). */
  source: number;
  sourceBlock: number;
  /** Multiplier on the block's documents (see {@linkcode weightDocuments}); 1 leaves them as they are. */
  weight: number;
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

/**
 * Tokenizes the sentences of documents into a {@linkcode DocumentSet}. `wordStarts` marks the first
 * piece of every word: WordPiece `##` pieces continue a word, and with `jieba` a Chinese character
 * continues the jieba word of the character before it (Chinese-BERT-wwm's rule), so whole-word masking
 * picks all of them or none. Empty sentences (nothing but whitespace or control characters) are left
 * out, as the reference leaves them out.
 */
export class DocumentTokenizer {
  /** 1 for ids of continuation pieces (`##...`): they never start a word. */
  readonly #continuation: Uint8Array;

  constructor(
    readonly tokenizer: WordPieceTokenizer,
    readonly jieba: Jieba | null,
    readonly set: DocumentSet = new DocumentSet(),
  ) {
    const prefix = tokenizer.continuingSubwordPrefix;
    this.#continuation = Uint8Array.from(
      tokenizer.idToToken,
      (token) => (token.length > prefix.length && token.startsWith(prefix) ? 1 : 0),
    );
  }

  addSentence(text: string): void {
    this.addSentences([text]);
  }

  /**
   * Adds the sentences of one document. Whole-word masking segments them with one jieba call: joined
   * by "\n", which jieba always cuts at (it is whitespace, and sentences are trimmed), so the words are
   * those of each sentence on its own, for fewer calls into the native module.
   */
  addSentences(texts: readonly string[]): void {
    if (!this.jieba) {
      for (const text of texts) this.#add(text, null, null);
      return;
    }
    const words = this.jieba.cut(texts.length === 1 ? texts[0]! : texts.join("\n"), true);
    let w = 0, wordStart = 0, sentenceStart = 0;
    for (const text of texts) {
      const length = codePoints(text);
      if (this.#boundaries.length < length + 1) {
        this.#boundaries = new Uint8Array(2 * (length + 1));
        this.#cjkAt = new Uint8Array(2 * (length + 1));
      }
      const boundaries = this.#boundaries, cjkAt = this.#cjkAt;
      boundaries.fill(0, 0, length + 1);
      // A word starting before this sentence's end starts a word of it (the one at its end is the "\n").
      for (; w < words.length && wordStart < sentenceStart + length; w++) {
        if (wordStart >= sentenceStart) boundaries[wordStart - sentenceStart] = 1;
        wordStart += codePoints(words[w]!);
      }
      for (let i = 0, cp = 0; i < text.length; i++, cp++) {
        const c = text.codePointAt(i)!;
        if (c > 0xffff) i++;
        cjkAt[cp] = (classifyCodePoint(c) & CJK) !== 0 ? 1 : 0;
      }
      this.#add(text, boundaries, cjkAt);
      sentenceStart += length + 1;
    }
  }

  /** Jieba word starts and CJK characters of the sentence being added, by code point (reused). */
  #boundaries = new Uint8Array(256);
  #cjkAt = new Uint8Array(256);

  #add(text: string, boundaries: Uint8Array | null, cjkAt: Uint8Array | null): void {
    // The tokenizer's piece buffer rather than tokenizeWords: no object per word (they took a third of
    // the build's time). A piece starts a word unless it is a `##` continuation, or a Chinese character
    // inside the jieba word of the character before it.
    const pieces = this.tokenizer.tokenizePieces(text);
    const set = this.set;
    const count = pieces.length;
    set.reserve(count);
    const ids = set.ids, wordStarts = set.wordStarts, continuation = this.#continuation;
    const pieceIds = pieces.ids;
    let at = set.tokens;
    if (!boundaries || !cjkAt) {
      for (let p = 0; p < count; p++, at++) {
        const id = pieceIds[p]!;
        ids[at] = id;
        wordStarts[at] = continuation[id] ? 0 : 1;
      }
    } else {
      let previousCjkEnd = -1;
      for (let p = 0; p < count; p++, at++) {
        const id = pieceIds[p]!, start = pieces.starts[p]!, end = pieces.ends[p]!;
        const cjk = end - start === 1 && cjkAt[start] === 1;
        const continuesJiebaWord = cjk && previousCjkEnd === start && !boundaries[start];
        ids[at] = id;
        wordStarts[at] = continuation[id] || continuesJiebaWord ? 0 : 1;
        previousCjkEnd = cjk ? end : -1;
      }
    }
    set.tokens = at;
    set.endSentence();
  }

  /**
   * Ends the document of the sentences added since the last end; returns its index in the set, or -1
   * when it has no tokens.
   */
  endDocument(): number {
    return this.set.endDocument();
  }

  /** The document so far as a {@linkcode Document} (null when it has no tokens). */
  finish(): Document | null {
    const d = this.set.endDocument();
    return d < 0 ? null : this.set.document(d);
  }
}

/** Whether this platform stores a uint16 low byte first (shards are little endian). */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** Growable byte buffer of encoded records. */
class RecordBuffer {
  bytes = new Uint8Array(1 << 20);
  view = new DataView(this.bytes.buffer);
  /** The bytes as uint16s: records of uint16 ids without word starts are all of even size. */
  words = new Uint16Array(this.bytes.buffer);
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
      this.words = new Uint16Array(grown.buffer);
    }
    if (this.count === this.offsets.length) {
      const grown = new Uint32Array(this.offsets.length * 2);
      grown.set(this.offsets);
      this.offsets = grown;
    }
    this.offsets[this.count++] = this.length;
    if (this.idBytes === 2 && !x.wholeWord && LITTLE_ENDIAN && (this.length & 1) === 0) {
      this.length = this.#addWords(x);
      return;
    }
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

  /** writeRecordFields for uint16 ids and no word starts, a uint16 at a time (the common case). */
  #addWords(x: AssembledInstance): number {
    const words = this.words, ids = x.ids, positions = x.positions, labels = x.labels;
    const length = x.length, masked = x.masked;
    let at = this.length >> 1;
    words[at] = length;
    words[at + 1] = x.segmentALength;
    words[at + 2] = x.isRandomNext ? 1 : 0; // flags, then the reserved byte
    words[at + 3] = masked;
    at += 4;
    let all = 0;
    for (let i = 0; i < length; i++) {
      const id = ids[i]!;
      all |= id;
      words[at++] = id;
    }
    for (let k = 0; k < masked; k++) words[at++] = positions[k]!;
    for (let k = 0; k < masked; k++) {
      const id = labels[k]!;
      all |= id;
      words[at++] = id;
    }
    if ((all & ~0xffff) !== 0) {
      // Name the id as writeRecordFields does.
      writeRecordFields(
        this.view,
        this.length,
        ids,
        length,
        0,
        false,
        positions,
        labels,
        masked,
        undefined,
        2,
      );
    }
    return at << 1;
  }
}

/** What one thread reuses from block to block: tokenizer state, document arenas, the record buffer. */
export class BlockWorkspace {
  readonly documentTokenizer: DocumentTokenizer;
  readonly records: RecordBuffer;
  /** Indices of the block's training and held-out documents. */
  train = new Uint32Array(1 << 12);
  held = new Uint32Array(1 << 6);

  private constructor(tokenizer: WordPieceTokenizer, jieba: Jieba | null, idBytes: 2 | 4) {
    this.documentTokenizer = new DocumentTokenizer(tokenizer, jieba);
    this.records = new RecordBuffer(idBytes);
  }

  /** Shards hold ids as uint16 when the vocabulary fits, else uint32 (`idBytesFor`). */
  static async create(tokenizer: WordPieceTokenizer, settings: BlockSettings): Promise<BlockWorkspace> {
    const idBytes = idBytesFor(tokenizer.idToToken.length);
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
  weighting: Pick<RawBlock, "source" | "sourceBlock" | "weight"> = {
    source: 0,
    sourceBlock: index,
    weight: 1,
  },
): BlockResult {
  let sentences = 0, characters = 0;
  const holdOut = Rng.seeded(settings.seed, index, 0xe7a1);
  const documentTokenizer = workspace.documentTokenizer;
  const set = documentTokenizer.set;
  set.clear();
  let trainCount = 0, heldCount = 0;
  for (const lines of rawDocuments) {
    const heldOut = holdOut.random() < settings.evalFraction;
    // A document given as one line is split into its sentences, so NSP still sees sentence boundaries.
    documentTokenizer.addSentences(lines.length === 1 ? splitSentences(lines[0]!) : lines);
    const d = documentTokenizer.endDocument();
    if (d < 0) continue;
    for (const line of lines) characters += codePoints(line);
    if (heldOut) {
      if (heldCount === workspace.held.length) workspace.held = grown(workspace.held);
      workspace.held[heldCount++] = d;
    } else {
      if (trainCount === workspace.train.length) workspace.train = grown(workspace.train);
      workspace.train[trainCount++] = d;
    }
    sentences += set.sentenceCount(d);
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
  // The weighting draws from a generator of its own, seeded by the block's place in its source, so a
  // source keeps the same documents whatever other sources the build mixes in.
  const weighRng = Rng.seeded(settings.seed, weighting.sourceBlock, 0x3e16);
  const train = instancesOf(
    set,
    weightDocuments(workspace.train.subarray(0, trainCount), weighting.weight, weighRng),
    Rng.seeded(settings.seed, index),
    instanceSettings,
    settings,
    workspace,
  );
  const held = instancesOf(
    set,
    weightDocuments(workspace.held.subarray(0, heldCount), weighting.weight, weighRng),
    Rng.seeded(settings.seed, index, 0xe7a2),
    instanceSettings,
    settings,
    workspace,
  );
  train.stats.sentences = sentences;
  return {
    index,
    source: weighting.source,
    documentsRead: trainCount + heldCount,
    characters,
    train,
    eval: held,
  };
}

/**
 * A source's weight applied to its documents (in corpus order): `floor(weight)` copies of all of
 * them, then one more copy of a seeded `weight - floor(weight)` share of them (exactly that share of
 * the block, rounded, kept in corpus order). So 0.5 uses half of the documents, 2 uses each twice (a
 * per-source dupe factor), 1.5 all once and half twice. The share is rounded per block and split (training,
 * held out), so a source gets it to within a document or two a block. Weight 1 returns `documents` itself and draws
 * nothing, so an unweighted build stays byte for byte what it was.
 */
export function weightDocuments(documents: Uint32Array, weight: number, rng: Rng): Uint32Array {
  if (weight === 1) return documents;
  const whole = Math.floor(weight), share = weight - whole;
  const extra = Math.round(documents.length * share);
  const out = new Uint32Array(whole * documents.length + extra);
  for (let c = 0; c < whole; c++) out.set(documents, c * documents.length);
  if (extra > 0) {
    const order = new Uint32Array(documents.length);
    for (let k = 0; k < order.length; k++) order[k] = k;
    rng.shuffle(order);
    const chosen = order.subarray(0, extra).sort();
    for (let k = 0; k < extra; k++) out[whole * documents.length + k] = documents[chosen[k]!]!;
  }
  return out;
}

function grown(array: Uint32Array): Uint32Array<ArrayBuffer> {
  const bigger = new Uint32Array(array.length * 2);
  bigger.set(array);
  return bigger;
}

function instancesOf(
  set: DocumentSet,
  documents: Uint32Array,
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
  const buffer = workspace.records;
  buffer.reset();
  const emit = (x: AssembledInstance) => {
    buffer.add(x);
    stats.tokens += x.length;
    stats.maskedTokens += x.masked;
    if (x.isRandomNext) stats.randomNext++;
  };
  if (settings.packed) {
    // Rows follow the corpus order on the first pass (so a row's neighbours are its document's
    // neighbours) and a fresh document order on each further pass (new row boundaries and neighbours);
    // rows are not shuffled: the trainer's reader shuffles every epoch.
    const packer = new RowPacker(instanceSettings.maxSeqLength, instanceSettings.masking, rng, emit);
    for (let dupe = 0; dupe < settings.dupeFactor; dupe++) {
      if (dupe > 0) rng.shuffle(documents);
      for (let d = 0; d < documents.length; d++) packer.addDocument(set, documents[d]!);
    }
    packer.finish();
    stats.instances = buffer.count;
    return {
      records: buffer.bytes.slice(0, buffer.length),
      offsets: buffer.offsets.slice(0, buffer.count),
      stats,
    };
  }
  rng.shuffle(documents);
  for (let dupe = 0; dupe < settings.dupeFactor; dupe++) {
    for (let d = 0; d < documents.length; d++) {
      assembleInstances(set, documents, d, instanceSettings, rng, emit);
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

/**
 * Pretraining instances from tokenized documents, step for step as google-research/bert
 * create_pretraining_data.py builds them (`create_instances_from_document` → `truncate_seq_pair` →
 * `create_masked_lm_predictions`), on token ids, with one seeded `rng` passed down explicitly.
 *
 * Where we differ, and why: the reference holds the whole corpus and draws the random next segment
 * from any document; we work on blocks of documents (build.ts) and draw it from another document of
 * the same block, so memory stays bounded whatever the corpus size.
 *
 * @module
 */
import type { PretrainInstance } from "../shared/shards/format.ts";
import { type MaskingSettings, maskInPlace } from "../shared/shards/masking.ts";
import type { Rng } from "../shared/shards/rng.ts";

/**
 * A tokenized document, flat: sentence j is tokens [sentenceStarts[j], sentenceStarts[j + 1]).
 * `wordStarts[t]` is 1 where token t starts a word (whole-word masking).
 */
export interface Document {
  ids: Uint32Array;
  wordStarts: Uint8Array;
  /** (S + 1) offsets; every sentence holds at least one token. */
  sentenceStarts: Uint32Array;
}

export function sentenceCount(document: Document): number {
  return document.sentenceStarts.length - 1;
}

/**
 * Tokenized documents, flat in a few arrays reused block after block (the build's form: no object per
 * document, and a random next segment costs a couple of array reads). Sentence k is tokens
 * [sentenceStarts[k], sentenceStarts[k + 1]), document d is sentences [documentStarts[d],
 * documentStarts[d + 1]); tokens, sentences and documents are appended in order.
 */
export class DocumentSet {
  ids = new Uint32Array(1 << 16);
  wordStarts = new Uint8Array(1 << 16);
  tokens = 0;
  /** Sentence starts; `sentenceStarts[sentences]` is where the open sentence starts. */
  sentenceStarts = new Uint32Array(1 << 12);
  sentences = 0;
  /** Document starts (in sentences); `documentStarts[documents]` is where the open document starts. */
  documentStarts = new Uint32Array(1 << 10);
  documents = 0;

  /** A set of the given documents (tests, and callers holding Document objects). */
  static of(documents: readonly Document[]): DocumentSet {
    const set = new DocumentSet();
    for (const document of documents) {
      const starts = document.sentenceStarts;
      for (let j = 0; j + 1 < starts.length; j++) {
        const from = starts[j]!, to = starts[j + 1]!;
        set.reserve(to - from);
        set.ids.set(document.ids.subarray(from, to), set.tokens);
        set.wordStarts.set(document.wordStarts.subarray(from, to), set.tokens);
        set.tokens += to - from;
        set.endSentence();
      }
      set.endDocument();
    }
    return set;
  }

  /** Forgets every document: the arrays get overwritten by the next ones. */
  clear(): void {
    this.tokens = this.sentences = this.documents = 0;
    this.sentenceStarts[0] = 0;
    this.documentStarts[0] = 0;
  }

  /** Room for `extra` more tokens from `tokens` on. */
  reserve(extra: number): void {
    if (this.tokens + extra <= this.ids.length) return;
    const size = Math.max(this.ids.length * 2, this.tokens + extra);
    const ids = new Uint32Array(size), wordStarts = new Uint8Array(size);
    ids.set(this.ids.subarray(0, this.tokens));
    wordStarts.set(this.wordStarts.subarray(0, this.tokens));
    this.ids = ids;
    this.wordStarts = wordStarts;
  }

  /** Ends the open sentence: the tokens added since the last end (nothing when there are none). */
  endSentence(): void {
    if (this.tokens === this.sentenceStarts[this.sentences]) return;
    if (this.sentences + 2 > this.sentenceStarts.length) this.sentenceStarts = grown(this.sentenceStarts);
    this.sentenceStarts[++this.sentences] = this.tokens;
  }

  /** Ends the open document; returns its index, or -1 when it has no sentence (and is no document). */
  endDocument(): number {
    if (this.sentences === this.documentStarts[this.documents]) return -1;
    if (this.documents + 2 > this.documentStarts.length) this.documentStarts = grown(this.documentStarts);
    this.documentStarts[++this.documents] = this.sentences;
    return this.documents - 1;
  }

  sentenceCount(d: number): number {
    return this.documentStarts[d + 1]! - this.documentStarts[d]!;
  }

  /** Document `d` as a {@linkcode Document} (views into the set's arrays). */
  document(d: number): Document {
    const first = this.documentStarts[d]!, last = this.documentStarts[d + 1]!;
    const from = this.sentenceStarts[first]!, to = this.sentenceStarts[last]!;
    return {
      ids: this.ids.subarray(from, to),
      wordStarts: this.wordStarts.subarray(from, to),
      sentenceStarts: this.sentenceStarts.slice(first, last + 1).map((start) => start - from),
    };
  }
}

function grown(array: Uint32Array): Uint32Array<ArrayBuffer> {
  const bigger = new Uint32Array(array.length * 2);
  bigger.set(array);
  return bigger;
}

export interface InstanceSettings {
  maxSeqLength: number;
  shortSeqProb: number;
  /** Probability that B is a random segment of another document (the paper's 50%). */
  randomNextProb: number;
  masking: MaskingSettings;
}

/** A token window [lo, hi) of a document's ids (no copy): truncation from either end moves the bounds. */
class Segment {
  ids: Uint32Array = NO_IDS;
  wordStarts: Uint8Array = NO_WORD_STARTS;
  lo = 0;
  hi = 0;

  get size(): number {
    return this.hi - this.lo;
  }

  /** Sentences [from, to) of `set` (indices into its sentence list). */
  take(set: DocumentSet, from: number, to: number): void {
    this.ids = set.ids;
    this.wordStarts = set.wordStarts;
    this.lo = set.sentenceStarts[from]!;
    this.hi = set.sentenceStarts[to]!;
  }
}
const NO_IDS = new Uint32Array(0);
const NO_WORD_STARTS = new Uint8Array(0);

/** Truncates a pair of sequences to a maximum sequence length (the reference's `truncate_seq_pair`). */
export function truncateSeqPair(a: Segment, b: Segment, maxNumTokens: number, rng: Rng): void {
  while (a.size + b.size > maxNumTokens) {
    const trunc = a.size > b.size ? a : b;
    // We want to sometimes truncate from the front and sometimes from the back to add more randomness
    // and avoid biases.
    if (rng.random() < 0.5) trunc.lo++;
    else trunc.hi--;
  }
}

const segmentA = new Segment();
const segmentB = new Segment();

/**
 * One instance in reusable buffers (the build encodes it straight from them): `ids` (masked),
 * `wordStarts`, `positions` and `labels` hold `length`, `length`, `masked` and `masked` valid entries.
 */
export class AssembledInstance {
  length = 0;
  segmentALength = 0;
  isRandomNext = false;
  masked = 0;
  /** Whether the instance keeps its word starts (whole-word masking). */
  wholeWord = false;
  readonly ids: Uint32Array;
  readonly wordStarts: Uint8Array;
  readonly positions: Uint16Array;
  readonly labels: Uint32Array;

  constructor(readonly capacity: number) {
    this.ids = new Uint32Array(capacity);
    this.wordStarts = new Uint8Array(capacity);
    this.positions = new Uint16Array(capacity);
    this.labels = new Uint32Array(capacity);
  }

  /** The instance as views into the buffers (valid until the next instance is assembled). */
  view(): PretrainInstance {
    const instance: PretrainInstance = {
      inputIds: this.ids.subarray(0, this.length),
      segmentALength: this.segmentALength,
      isRandomNext: this.isRandomNext,
      maskedPositions: this.positions.subarray(0, this.masked),
      maskedLabels: this.labels.subarray(0, this.masked),
    };
    if (this.wholeWord) instance.wordStarts = this.wordStarts.subarray(0, this.length);
    return instance;
  }
}

/** The instance buffers of this thread, reused by every instance. */
let assembled: AssembledInstance | null = null;
function assembledFor(maxSeqLength: number): AssembledInstance {
  if (!assembled || assembled.capacity < maxSeqLength) assembled = new AssembledInstance(maxSeqLength);
  return assembled;
}

/**
 * Appends the instances of `documents[documentIndex]` to `out` (the reference's
 * `create_instances_from_document`); random next segments come from other entries of `documents`.
 * Each instance's arrays are reused for the next one: `out` must encode or copy them before returning.
 */
export function createInstancesFromDocument(
  documents: readonly Document[],
  documentIndex: number,
  settings: InstanceSettings,
  rng: Rng,
  out: (instance: PretrainInstance) => void,
): void {
  const order = Uint32Array.from(documents.keys());
  assembleInstances(DocumentSet.of(documents), order, documentIndex, settings, rng, (x) => out(x.view()));
}

/**
 * {@linkcode createInstancesFromDocument} on a {@linkcode DocumentSet}, without an object per
 * instance: `documents` lists the set's documents in the order to draw from, the instances are those
 * of `documents[documentIndex]`, and `out` gets the thread's {@linkcode AssembledInstance}, overwritten
 * by the next instance.
 */
export function assembleInstances(
  set: DocumentSet,
  documents: Uint32Array,
  documentIndex: number,
  settings: InstanceSettings,
  rng: Rng,
  out: (instance: AssembledInstance) => void,
): void {
  const document = documents[documentIndex]!;
  const firstSentence = set.documentStarts[document]!;
  const sentences = set.documentStarts[document + 1]! - firstSentence;
  const starts = set.sentenceStarts;
  // Account for [CLS], [SEP], [SEP]
  const maxNumTokens = settings.maxSeqLength - 3;

  // We *usually* want to fill up the entire sequence since we are padding to max_seq_length anyways,
  // so short sequences are generally wasted computation. However, we *sometimes* (short_seq_prob of the
  // time) want to use shorter sequences to minimize the mismatch between pretraining and fine-tuning.
  let targetSeqLength = maxNumTokens;
  if (rng.random() < settings.shortSeqProb) targetSeqLength = rng.randint(2, maxNumTokens);

  // Segments A and B follow the sentence boundaries of the input rather than an arbitrary split point,
  // which would make next sentence prediction too easy. The current chunk is sentences [chunkFrom, i]
  // (counted from the document's first sentence).
  let chunkFrom = 0;
  let currentLength = 0;
  let i = 0;
  while (i < sentences) {
    currentLength += starts[firstSentence + i + 1]! - starts[firstSentence + i]!;
    if (i === sentences - 1 || currentLength >= targetSeqLength) {
      const chunkLength = i + 1 - chunkFrom;
      // How many sentences of the chunk go into segment A.
      let aEnd = 1;
      if (chunkLength >= 2) aEnd = rng.randint(1, chunkLength - 1);
      const a = segmentA, b = segmentB;
      a.take(set, firstSentence + chunkFrom, firstSentence + chunkFrom + aEnd);

      let isRandomNext = false;
      if (chunkLength === 1 || rng.random() < settings.randomNextProb) {
        isRandomNext = true;
        const targetBLength = targetSeqLength - a.size;
        // Rarely more than one try on a large block; it keeps B out of the document A comes from (by
        // document, not list entry: a weighted source lists a document more than once).
        let randomDocumentIndex = documentIndex;
        for (let tries = 0; tries < 10; tries++) {
          randomDocumentIndex = rng.randint(0, documents.length - 1);
          if (documents[randomDocumentIndex] !== document) break;
        }
        const randomDocument = documents[randomDocumentIndex]!;
        const randomFirst = set.documentStarts[randomDocument]!;
        const randomSentences = set.documentStarts[randomDocument + 1]! - randomFirst;
        const randomStart = randomFirst + rng.randint(0, randomSentences - 1);
        // Sentences from randomStart until B holds targetBLength tokens (or the document ends).
        const randomEnd = randomFirst + randomSentences;
        let end = randomStart + 1;
        while (end < randomEnd && starts[end]! - starts[randomStart]! < targetBLength) end++;
        b.take(set, randomStart, end);
        // The sentences of the chunk that B did not use are "put back" so they are not wasted.
        i -= chunkLength - aEnd;
      } else {
        b.take(set, firstSentence + chunkFrom + aEnd, firstSentence + chunkFrom + chunkLength);
      }
      truncateSeqPair(a, b, maxNumTokens, rng);
      // Sentences are never empty and truncation cuts the longer side, so both keep a token.
      if (a.size < 1 || b.size < 1) throw new Error(`empty segment: |A| = ${a.size}, |B| = ${b.size}`);
      out(assemble(a, b, isRandomNext, settings, rng));
      chunkFrom = i + 1;
      currentLength = 0;
    }
    i++;
  }
}

/** `[CLS] A [SEP] B [SEP]`, then the masked LM predictions, in the thread's instance buffers. */
function assemble(
  a: Segment,
  b: Segment,
  isRandomNext: boolean,
  settings: InstanceSettings,
  rng: Rng,
): AssembledInstance {
  const masking = settings.masking;
  const x = assembledFor(settings.maxSeqLength);
  const ids = x.ids, wordStarts = x.wordStarts;
  ids[0] = masking.clsId;
  let at = 1;
  if (masking.wholeWord) {
    wordStarts[0] = 1;
    // A segment cut at the front may open on a continuation; it still starts a word of its own.
    for (let t = a.lo, source = a.ids, starts = a.wordStarts; t < a.hi; t++, at++) {
      ids[at] = source[t]!;
      wordStarts[at] = t === a.lo ? 1 : starts[t]!;
    }
    ids[at] = masking.sepId;
    wordStarts[at++] = 1;
    for (let t = b.lo, source = b.ids, starts = b.wordStarts; t < b.hi; t++, at++) {
      ids[at] = source[t]!;
      wordStarts[at] = t === b.lo ? 1 : starts[t]!;
    }
    ids[at] = masking.sepId;
    wordStarts[at++] = 1;
  } else {
    // Word starts only matter to whole-word masking (and are not stored without it).
    for (let t = a.lo, source = a.ids; t < a.hi; t++) ids[at++] = source[t]!;
    ids[at++] = masking.sepId;
    for (let t = b.lo, source = b.ids; t < b.hi; t++) ids[at++] = source[t]!;
    ids[at++] = masking.sepId;
  }
  x.length = at;
  x.segmentALength = a.size + 2;
  x.isRandomNext = isRandomNext;
  x.wholeWord = masking.wholeWord;
  x.masked = maskInPlace(ids, at, wordStarts, masking, rng, x.positions, x.labels);
  return x;
}

/**
 * Packed rows (`--packed`, manifest `settings.packed`): not a step of the reference but RoBERTa's
 * FULL-SENTENCES input. Each row is `[CLS] t1 ... tn [SEP]` of exactly `maxSeqLength` tokens, filled
 * with consecutive sentences of a document and going on into the next document after a `[SEP]`, so no
 * compute goes to padding. A row is one segment (segmentALength = its length, token types all 0) and
 * has no NSP label (isRandomNext false); tokens attend across the document boundaries inside a row,
 * as RoBERTa's do. A sentence longer than a row goes on in the next row. A document ending exactly at
 * a row's end needs no separator: the row's closing `[SEP]` is one. Only the row {@linkcode finish}
 * emits may be short.
 */
export class RowPacker {
  readonly #x: AssembledInstance;
  /** Next free slot of the row being filled; slot 0 is `[CLS]`, slot `maxSeqLength - 1` the closing `[SEP]`. */
  #at = 1;
  #separatorDue = false;

  constructor(
    readonly maxSeqLength: number,
    readonly masking: MaskingSettings,
    readonly rng: Rng,
    readonly out: (row: AssembledInstance) => void,
  ) {
    if (maxSeqLength < 3) throw new RangeError(`a packed row needs maxSeqLength >= 3: got ${maxSeqLength}`);
    this.#x = new AssembledInstance(maxSeqLength);
    this.#x.ids[0] = masking.clsId;
    this.#x.wordStarts[0] = 1;
  }

  /** Appends the tokens of document `d` of `set`. */
  addDocument(set: DocumentSet, d: number): void {
    const from = set.sentenceStarts[set.documentStarts[d]!]!;
    const to = set.sentenceStarts[set.documentStarts[d + 1]!]!;
    if (from === to) return;
    if (this.#separatorDue && this.#at > 1) this.#push(this.masking.sepId, 1);
    const ids = set.ids, wordStarts = set.wordStarts;
    for (let t = from; t < to; t++) this.#push(ids[t]!, wordStarts[t]!);
    this.#separatorDue = true;
  }

  /** Emits the unfinished row, if any (the one short row of a stream). */
  finish(): void {
    if (this.#at > 1) this.#emit();
    this.#separatorDue = false;
  }

  #push(id: number, wordStart: number): void {
    const x = this.#x, at = this.#at;
    x.ids[at] = id;
    // A row cut inside a word still opens a word of its own (as a truncated segment does).
    x.wordStarts[at] = at === 1 ? 1 : wordStart;
    this.#at = at + 1;
    if (this.#at === this.maxSeqLength - 1) this.#emit();
  }

  #emit(): void {
    const x = this.#x, length = this.#at + 1;
    x.ids[this.#at] = this.masking.sepId;
    x.wordStarts[this.#at] = 1;
    x.length = length;
    x.segmentALength = length;
    x.isRandomNext = false;
    x.wholeWord = this.masking.wholeWord;
    x.masked = maskInPlace(x.ids, length, x.wordStarts, this.masking, this.rng, x.positions, x.labels);
    this.out(x);
    // The next row starts fresh: [CLS] stays in slot 0, the rest is overwritten.
    this.#at = 1;
  }
}

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
import {
  createMaskedLmPredictions,
  type MaskingScratch,
  maskingScratch,
  type MaskingSettings,
} from "../shared/shards/masking.ts";
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

export interface InstanceSettings {
  maxSeqLength: number;
  shortSeqProb: number;
  /** Probability that B is a random segment of another document (the paper's 50%). */
  randomNextProb: number;
  masking: MaskingSettings;
}

/** A token window [lo, hi) over a reusable array: truncation from either end moves the bounds. */
class Segment {
  ids: number[] = [];
  wordStarts: number[] = [];
  lo = 0;
  hi = 0;

  get size(): number {
    return this.hi - this.lo;
  }

  reset(): void {
    this.ids.length = 0;
    this.wordStarts.length = 0;
    this.lo = this.hi = 0;
  }

  /** Appends sentence `j` of `document`. */
  extend(document: Document, j: number): void {
    const from = document.sentenceStarts[j]!, to = document.sentenceStarts[j + 1]!;
    for (let t = from; t < to; t++) {
      this.ids.push(document.ids[t]!);
      this.wordStarts.push(document.wordStarts[t]!);
    }
    this.hi = this.ids.length;
  }
}

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

/** Buffers reused by every instance of a thread (an instance passed to `out` is valid during the call only). */
let scratch: { length: number; ids: Uint32Array; wordStarts: Uint8Array; masking: MaskingScratch } | null =
  null;
function scratchFor(maxSeqLength: number) {
  if (!scratch || scratch.length < maxSeqLength) {
    scratch = {
      length: maxSeqLength,
      ids: new Uint32Array(maxSeqLength),
      wordStarts: new Uint8Array(maxSeqLength),
      masking: maskingScratch(maxSeqLength),
    };
  }
  return scratch;
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
  const document = documents[documentIndex]!;
  const sentences = sentenceCount(document);
  const starts = document.sentenceStarts;
  // Account for [CLS], [SEP], [SEP]
  const maxNumTokens = settings.maxSeqLength - 3;

  // We *usually* want to fill up the entire sequence since we are padding to max_seq_length anyways,
  // so short sequences are generally wasted computation. However, we *sometimes* (short_seq_prob of the
  // time) want to use shorter sequences to minimize the mismatch between pretraining and fine-tuning.
  let targetSeqLength = maxNumTokens;
  if (rng.random() < settings.shortSeqProb) targetSeqLength = rng.randint(2, maxNumTokens);

  // Segments A and B follow the sentence boundaries of the input rather than an arbitrary split point,
  // which would make next sentence prediction too easy. The current chunk is sentences [chunkFrom, i].
  let chunkFrom = 0;
  let currentLength = 0;
  let i = 0;
  while (i < sentences) {
    currentLength += starts[i + 1]! - starts[i]!;
    if (i === sentences - 1 || currentLength >= targetSeqLength) {
      const chunkLength = i + 1 - chunkFrom;
      // How many sentences of the chunk go into segment A.
      let aEnd = 1;
      if (chunkLength >= 2) aEnd = rng.randint(1, chunkLength - 1);
      const a = segmentA, b = segmentB;
      a.reset();
      b.reset();
      for (let j = 0; j < aEnd; j++) a.extend(document, chunkFrom + j);

      let isRandomNext = false;
      if (chunkLength === 1 || rng.random() < settings.randomNextProb) {
        isRandomNext = true;
        const targetBLength = targetSeqLength - a.size;
        // Rarely more than one try on a large block; it keeps B out of the document A comes from.
        let randomDocumentIndex = documentIndex;
        for (let tries = 0; tries < 10; tries++) {
          randomDocumentIndex = rng.randint(0, documents.length - 1);
          if (randomDocumentIndex !== documentIndex) break;
        }
        const randomDocument = documents[randomDocumentIndex]!;
        const randomSentences = sentenceCount(randomDocument);
        const randomStart = rng.randint(0, randomSentences - 1);
        for (let j = randomStart; j < randomSentences; j++) {
          b.extend(randomDocument, j);
          if (b.size >= targetBLength) break;
        }
        // The sentences of the chunk that B did not use are "put back" so they are not wasted.
        i -= chunkLength - aEnd;
      } else {
        for (let j = aEnd; j < chunkLength; j++) b.extend(document, chunkFrom + j);
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

/** `[CLS] A [SEP] B [SEP]`, then the masked LM predictions; arrays are views into the thread's scratch. */
function assemble(
  a: Segment,
  b: Segment,
  isRandomNext: boolean,
  settings: InstanceSettings,
  rng: Rng,
): PretrainInstance {
  const masking = settings.masking;
  const length = a.size + b.size + 3;
  const buffers = scratchFor(settings.maxSeqLength);
  const ids = buffers.ids.subarray(0, length);
  const wordStarts = buffers.wordStarts.subarray(0, length).fill(1);
  ids[0] = masking.clsId;
  let at = 1;
  for (const part of [a, b]) {
    for (let t = part.lo; t < part.hi; t++, at++) {
      ids[at] = part.ids[t]!;
      // A segment cut at the front may open on a continuation; it still starts a word of its own.
      wordStarts[at] = t === part.lo ? 1 : part.wordStarts[t]!;
    }
    ids[at++] = masking.sepId;
  }
  const masked = createMaskedLmPredictions(ids, wordStarts, masking, rng, buffers.masking);
  const instance: PretrainInstance = {
    inputIds: masked.inputIds,
    segmentALength: a.size + 2,
    isRandomNext,
    maskedPositions: masked.positions,
    maskedLabels: masked.labels,
  };
  if (masking.wholeWord) instance.wordStarts = wordStarts;
  return instance;
}

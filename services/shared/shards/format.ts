/**
 * The binary shard format: one file holds up to a few tens of MB of pretraining instances.
 *
 * ```
 * header (32 bytes, little endian)
 *   0  magic     8 bytes  "BFSHARD\0"
 *   8  version   u32      FORMAT_VERSION, checked on load
 *  12  idBytes   u32      2 (uint16 ids, vocab <= 65536) or 4 (uint32)
 *  16  maxSeqLen u32      longest instance allowed when the shard was written
 *  20  reserved  12 bytes 0
 * records, one per instance, back to back
 *   u16 length L           tokens, [CLS] A [SEP] B [SEP]
 *   u16 segmentALength     tokens of type 0 ([CLS] A [SEP]); the rest are type 1
 *   u8  flags              bit 0: B is a random next (NSP label 1), bit 1: word-start bitmap present
 *   u8  reserved
 *   u16 M                  masked positions
 *   L   ids                input ids after masking (idBytes each)
 *   M   u16 positions      ascending
 *   M   ids labels         the original ids at those positions
 *   ceil(L/8) bytes        word-start bitmap (bit i of byte i>>3 = token i starts a word), if flagged
 * index: count + 1 u32    byte offset of each record, then the end of the last one
 * trailer (16 bytes)
 *   count     u32          instances in this shard
 *   indexAt   u32          byte offset of the index
 *   magic     8 bytes      "BFSHEND\0": a shard cut short has none
 * ```
 *
 * Counts sit in the trailer so that a shard streams to the store as its records are made, with only the
 * index held back: the writer never buffers a whole shard.
 *
 * The original (unmasked) sequence is the input ids with the labels put back, so dynamic masking needs
 * nothing more than what a static shard stores.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";

export const SHARD_MAGIC = "BFSHARD\0";
export const TRAILER_MAGIC = "BFSHEND\0";
// 2: shards end with a trailer (end marker + counts), so a shard streams out as it is built.
export const FORMAT_VERSION = 2;
export const HEADER_BYTES = 32;
export const TRAILER_BYTES = 16;
const FLAG_RANDOM_NEXT = 1;
const FLAG_WORD_STARTS = 2;

/** One `[CLS] A [SEP] B [SEP]` training instance as the shards store it. */
export interface PretrainInstance {
  /** (L) input ids as the model sees them, masked positions already replaced. */
  inputIds: Uint32Array;
  /** Tokens of segment A including [CLS] and the first [SEP]: token_type_ids are 0 below it, 1 from it. */
  segmentALength: number;
  /** NSP label: true = B is a random segment of another document (label 1, HF convention). */
  isRandomNext: boolean;
  /** Ascending positions whose original token the MLM head predicts. */
  maskedPositions: Uint16Array;
  /** Original ids at `maskedPositions`. */
  maskedLabels: Uint32Array;
  /** (L) 1 where a token starts a word (whole-word masking); absent when the build kept no word boundaries. */
  wordStarts?: Uint8Array;
}

/** Bytes per id for a vocabulary of `vocabSize` entries. */
export function idBytesFor(vocabSize: number): 2 | 4 {
  return vocabSize <= 65536 ? 2 : 4;
}

/** Size in bytes of one encoded record. */
export function recordBytes(instance: PretrainInstance, idBytes: number): number {
  return recordBytesOf(
    instance.inputIds.length,
    instance.maskedPositions.length,
    idBytes,
    !!instance.wordStarts,
  );
}

/** Size in bytes of a record of `length` tokens and `masked` predictions. */
export function recordBytesOf(length: number, masked: number, idBytes: number, wordStarts: boolean): number {
  return 8 + length * idBytes + masked * (2 + idBytes) + (wordStarts ? (length + 7) >> 3 : 0);
}

/** Encodes one instance at `offset` of `view`; returns the offset after it. */
export function writeRecord(
  view: DataView,
  offset: number,
  instance: PretrainInstance,
  idBytes: number,
): number {
  const { inputIds, maskedPositions, maskedLabels, wordStarts } = instance;
  if (maskedLabels.length !== maskedPositions.length) {
    throw new InvalidArgument(
      `maskedLabels must match maskedPositions: ${maskedLabels.length} labels for ${maskedPositions.length} positions`,
    );
  }
  return writeRecordFields(
    view,
    offset,
    inputIds,
    inputIds.length,
    instance.segmentALength,
    instance.isRandomNext,
    maskedPositions,
    maskedLabels,
    maskedPositions.length,
    wordStarts,
    idBytes,
  );
}

/**
 * {@linkcode writeRecord} from the fields of an instance held in reusable buffers: the first `length`
 * ids (and word starts, when given) and the first `masked` positions and labels.
 */
export function writeRecordFields(
  view: DataView,
  offset: number,
  inputIds: Uint32Array,
  length: number,
  segmentALength: number,
  isRandomNext: boolean,
  maskedPositions: Uint16Array,
  maskedLabels: Uint32Array,
  masked: number,
  wordStarts: Uint8Array | undefined,
  idBytes: number,
): number {
  if (length > 0xffff) throw new InvalidArgument(`instance length must be <= 65535: got ${length}`);
  view.setUint16(offset, length, true);
  view.setUint16(offset + 2, segmentALength, true);
  view.setUint8(offset + 4, (isRandomNext ? FLAG_RANDOM_NEXT : 0) | (wordStarts ? FLAG_WORD_STARTS : 0));
  view.setUint8(offset + 5, 0);
  view.setUint16(offset + 6, masked, true);
  let at = offset + 8;
  at = writeIds(view, at, inputIds, length, idBytes);
  for (let i = 0; i < masked; i++, at += 2) view.setUint16(at, maskedPositions[i]!, true);
  at = writeIds(view, at, maskedLabels, masked, idBytes);
  if (wordStarts) {
    // bit i of byte i >> 3 = token i starts a word
    let byte = 0;
    for (let i = 0; i < length; i++) {
      if (wordStarts[i]) byte |= 1 << (i & 7);
      if ((i & 7) === 7) {
        view.setUint8(at++, byte);
        byte = 0;
      }
    }
    if ((length & 7) !== 0) view.setUint8(at++, byte);
  }
  return at;
}

function writeIds(view: DataView, at: number, ids: Uint32Array, count: number, idBytes: number): number {
  if (idBytes === 2) {
    for (let i = 0; i < count; i++, at += 2) {
      const id = ids[i]!;
      if (id > 0xffff) throw new InvalidArgument(`token id ${id} does not fit a uint16 shard (idBytes 2)`);
      view.setUint16(at, id, true);
    }
  } else {
    for (let i = 0; i < count; i++, at += 4) view.setUint32(at, ids[i]!, true);
  }
  return at;
}

function readIds(view: DataView, at: number, count: number, idBytes: number): Uint32Array {
  const ids = new Uint32Array(count);
  if (idBytes === 2) { for (let i = 0; i < count; i++) ids[i] = view.getUint16(at + 2 * i, true); }
  else for (let i = 0; i < count; i++) ids[i] = view.getUint32(at + 4 * i, true);
  return ids;
}

/** The 32-byte header of a shard. */
export function shardHeader(idBytes: 2 | 4, maxSeqLen: number): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) out[i] = SHARD_MAGIC.charCodeAt(i);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(12, idBytes, true);
  view.setUint32(16, maxSeqLen, true);
  return out;
}

/** Index and trailer of a shard whose records start at `recordOffsets` (absolute) and end at `indexAt`. */
export function shardTail(recordOffsets: readonly number[], indexAt: number): Uint8Array {
  const count = recordOffsets.length;
  const out = new Uint8Array(4 * (count + 1) + TRAILER_BYTES);
  const view = new DataView(out.buffer);
  for (let i = 0; i < count; i++) view.setUint32(4 * i, recordOffsets[i]!, true);
  view.setUint32(4 * count, indexAt, true);
  const trailer = 4 * (count + 1);
  view.setUint32(trailer, count, true);
  view.setUint32(trailer + 4, indexAt, true);
  for (let i = 0; i < 8; i++) out[trailer + 8 + i] = TRAILER_MAGIC.charCodeAt(i);
  return out;
}

/**
 * Builds one shard file in memory from instances or encoded records (tests, small tools); the shard set
 * writer streams instead.
 */
export class ShardAssembler {
  #chunks: Uint8Array[] = [];
  #offsets: number[] = [];
  #bytes = HEADER_BYTES;

  constructor(readonly idBytes: 2 | 4, readonly maxSeqLen: number) {}

  get count(): number {
    return this.#offsets.length;
  }

  /** Bytes the finished shard would take now (header + records + index + trailer). */
  get bytes(): number {
    return this.#bytes + 4 * (this.#offsets.length + 1) + TRAILER_BYTES;
  }

  addInstance(instance: PretrainInstance): void {
    const bytes = new Uint8Array(recordBytes(instance, this.idBytes));
    writeRecord(new DataView(bytes.buffer), 0, instance, this.idBytes);
    this.addRecords(bytes, [0]);
  }

  /** Appends records encoded elsewhere: `recordOffsets[i]` is where record i starts inside `records`. */
  addRecords(records: Uint8Array, recordOffsets: ArrayLike<number>): void {
    for (let i = 0; i < recordOffsets.length; i++) this.#offsets.push(this.#bytes + recordOffsets[i]!);
    this.#chunks.push(records);
    this.#bytes += records.byteLength;
  }

  /** The finished shard file; the assembler is empty afterwards. */
  finish(): Uint8Array {
    const tail = shardTail(this.#offsets, this.#bytes);
    const out = new Uint8Array(this.#bytes + tail.byteLength);
    out.set(shardHeader(this.idBytes, this.maxSeqLen), 0);
    let at = HEADER_BYTES;
    for (const chunk of this.#chunks) {
      out.set(chunk, at);
      at += chunk.byteLength;
    }
    out.set(tail, at);
    this.#chunks = [];
    this.#offsets = [];
    this.#bytes = HEADER_BYTES;
    return out;
  }
}

/** Random access to the instances of one shard file held in memory; the header is checked on open. */
export class ShardView {
  readonly idBytes: 2 | 4;
  readonly count: number;
  readonly maxSeqLen: number;
  readonly #view: DataView;
  readonly #indexAt: number;

  /** @param source names the shard in error messages (its key) */
  constructor(readonly bytes: Uint8Array, readonly source = "shard") {
    if (bytes.byteLength < HEADER_BYTES) {
      throw new InvalidArgument(
        `${source}: not a shard (${bytes.byteLength} bytes, header needs ${HEADER_BYTES})`,
      );
    }
    const magic = String.fromCharCode(...bytes.subarray(0, 8));
    if (magic !== SHARD_MAGIC) {
      throw new InvalidArgument(
        `${source}: not a shard (magic ${JSON.stringify(magic)}, expected "BFSHARD\\0")`,
      );
    }
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = this.#view.getUint32(8, true);
    if (version !== FORMAT_VERSION) {
      throw new InvalidArgument(
        `${source}: shard format version ${version} is not supported (this reader reads ${FORMAT_VERSION})`,
      );
    }
    const idBytes = this.#view.getUint32(12, true);
    if (idBytes !== 2 && idBytes !== 4) {
      throw new InvalidArgument(`${source}: idBytes must be 2 or 4: got ${idBytes}`);
    }
    this.idBytes = idBytes;
    this.maxSeqLen = this.#view.getUint32(16, true);
    const trailer = bytes.byteLength - TRAILER_BYTES;
    const endMagic = String.fromCharCode(...bytes.subarray(trailer + 8));
    if (endMagic !== TRAILER_MAGIC) {
      throw new InvalidArgument(`${source}: truncated or corrupt (no end marker; the shard was cut short)`);
    }
    this.count = this.#view.getUint32(trailer, true);
    this.#indexAt = this.#view.getUint32(trailer + 4, true);
    if (this.#indexAt + 4 * (this.count + 1) !== trailer) {
      throw new InvalidArgument(
        `${source}: truncated or corrupt (index of ${this.count} entries at ${this.#indexAt} does not end at ${bytes.byteLength})`,
      );
    }
  }

  /** Instance `i` (0-based), decoded into fresh arrays. */
  get(i: number): PretrainInstance {
    if (!(i >= 0 && i < this.count)) {
      throw new RangeError(`${this.source}: instance ${i} out of range 0..${this.count - 1}`);
    }
    const view = this.#view;
    const at = view.getUint32(this.#indexAt + 4 * i, true);
    const length = view.getUint16(at, true);
    const segmentALength = view.getUint16(at + 2, true);
    const flags = view.getUint8(at + 4);
    const masked = view.getUint16(at + 6, true);
    let p = at + 8;
    const inputIds = readIds(view, p, length, this.idBytes);
    p += length * this.idBytes;
    const maskedPositions = new Uint16Array(masked);
    for (let k = 0; k < masked; k++) maskedPositions[k] = view.getUint16(p + 2 * k, true);
    p += 2 * masked;
    const maskedLabels = readIds(view, p, masked, this.idBytes);
    p += masked * this.idBytes;
    const instance: PretrainInstance = {
      inputIds,
      segmentALength,
      isRandomNext: (flags & FLAG_RANDOM_NEXT) !== 0,
      maskedPositions,
      maskedLabels,
    };
    if (flags & FLAG_WORD_STARTS) {
      const wordStarts = new Uint8Array(length);
      for (let t = 0; t < length; t++) wordStarts[t] = (view.getUint8(p + (t >> 3)) >> (t & 7)) & 1;
      instance.wordStarts = wordStarts;
    }
    return instance;
  }

  *[Symbol.iterator](): IterableIterator<PretrainInstance> {
    for (let i = 0; i < this.count; i++) yield this.get(i);
  }
}

/** The sequence before masking: input ids with the original ids put back at the masked positions. */
export function originalIds(instance: PretrainInstance): Uint32Array {
  const ids = instance.inputIds.slice();
  for (let k = 0; k < instance.maskedPositions.length; k++) {
    ids[instance.maskedPositions[k]!] = instance.maskedLabels[k]!;
  }
  return ids;
}

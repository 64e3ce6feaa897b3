/**
 * Builds a pretraining shard set from a corpus, in bounded memory:
 *
 *   corpus files (store objects or local files, `.gz` decompressed while streaming, sha256 hashed)
 *     → blocks of whole documents (~`blockBytes` of text each; blank line = document break), cut from
 *       the bytes without decoding them, so the calling thread does little more than read and write
 *     → workers (block bytes transferred, not copied): decode, tokenize, NSP pairs, masks, encode
 *       (block.ts; one RNG per block from (seed, block))
 *     → records (transferred back) streamed in block order into shards of at most `maxShardBytes`
 *     → manifest last.
 *
 * Memory is a few blocks in flight plus the record index of the shard being written, whatever the corpus
 * size. The output depends only on the corpus, the vocab and the settings (not on the worker count): the
 * same inputs give byte-identical shards.
 *
 * Where this differs from google-research/bert's create_pretraining_data.py, which holds the whole
 * corpus: random next segments come from another document of the same block rather than of the whole
 * corpus, and the document and instance shuffles are per block (the trainer's reader shuffles again
 * every epoch); a file boundary also ends a document, and a document longer than a block is cut.
 *
 * Tokenization runs in-process (the shared WordPiece code, on every worker) rather than through the
 * tokenizer service: `deno task bench shards` measures both, and the service's gRPC round trips made
 * it some 40x slower on the same text.
 *
 * @module
 */
import { basename } from "@std/path";
import { Cancelled, FailedPrecondition, InvalidArgument, NotFound } from "../shared/errors.ts";
import { idBytesFor } from "../shared/shards/format.ts";
import type { PretrainingSettings, ShardManifest, SourceReport } from "../shared/shards/manifest.ts";
import { validateName } from "../shared/store/names.ts";
import { DEFAULT_MAX_SHARD_BYTES, ShardSetWriter } from "../shared/shards/writer.ts";
import { Sha256 } from "../shared/store/hash.ts";
import { isPublished, MANIFEST_NAME, readManifest as readArtifactManifest } from "../shared/store/publish.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import {
  type BlockResult,
  type BlockSettings,
  type BlockStats,
  BlockWorkspace,
  documentsOf,
  processBlock,
  type RawBlock,
} from "./block.ts";
import type { WorkerReply, WorkerRequest } from "./build_worker.ts";

/** One input file of a corpus, opened as a byte stream when the build reaches it. */
export interface CorpusFile {
  name: string;
  /** Size in bytes when known (progress). */
  size?: number;
  open(): Promise<ReadableStream<Uint8Array>>;
}

export interface CorpusSource {
  /** The corpus' name in lineage records (`corpora/<name>` for stored corpora). */
  name: string;
  files: CorpusFile[];
}

/** One corpus of a multi-source build and the multiplier on its documents (block.ts weightDocuments). */
export interface WeightedSource {
  corpus: CorpusSource;
  /** 0 skips the source (it is not even read), 0.5 uses a seeded half of its documents, 2 each twice. */
  weight: number;
}

/** The largest weight a source may have: 1000 copies of every document is already far past useful. */
export const MAX_SOURCE_WEIGHT = 1000;

/** Checks a source weight, naming `field` in the error. */
export function checkWeight(weight: unknown, field: string): number {
  if (typeof weight !== "number" || !Number.isFinite(weight) || weight < 0 || weight > MAX_SOURCE_WEIGHT) {
    throw new InvalidArgument(`${field} must be a number in [0, ${MAX_SOURCE_WEIGHT}]: got ${weight}`);
  }
  return weight;
}

/**
 * A corpus in the store. A bare name (`poems`) is the published corpus artifact `corpora/poems/` (what
 * UploadCorpus writes): its files in manifest order, NOT_FOUND when absent, FAILED_PRECONDITION while
 * its upload is unfinished. A prefix ending in `/` takes every object under it in key order, and any
 * other key is one object; both skip artifact metadata.
 */
export async function corpusFromStore(store: ObjectStore, ref: string): Promise<CorpusSource> {
  if (typeof ref !== "string" || ref.trim() === "") {
    throw new InvalidArgument("corpus must name a corpus or object");
  }
  const files: CorpusFile[] = [];
  const open = (key: string, size?: number): CorpusFile => ({
    name: key,
    ...(size !== undefined ? { size } : {}),
    open: () => store.getStream(key),
  });
  if (!ref.includes("/")) {
    const prefix = `corpora/${validateName(ref, "corpus")}`;
    if (!(await isPublished(store, prefix))) {
      const any = await store.list(`${prefix}/`, { recursive: true })[Symbol.asyncIterator]().next();
      if (!any.done) {
        throw new FailedPrecondition(
          `corpus '${ref}' is incomplete (no ${MANIFEST_NAME}: its upload did not finish)`,
        );
      }
      throw new NotFound(`corpus '${ref}' not found (no ${prefix}/)`);
    }
    const manifest = await readArtifactManifest(store, prefix);
    for (const part of manifest.parts) files.push(open(`${prefix}/${part.name}`, part.size));
    if (files.length === 0) throw new FailedPrecondition(`corpus '${ref}' holds no files`);
    // Lineage names the artifact as the other services do: by its bare name.
    return { name: ref, files };
  }
  if (!ref.endsWith("/")) {
    const single = await store.stat(ref);
    if (!single) throw new NotFound(`corpus object ${ref} not found`);
    return { name: ref, files: [open(ref, single.size)] };
  }
  for await (const info of store.list(ref, { recursive: true })) {
    // Artifact metadata is not corpus text.
    if (info.key.endsWith(`/${MANIFEST_NAME}`) || info.key.endsWith("/lineage.json")) continue;
    files.push(open(info.key, info.size));
  }
  if (files.length === 0) throw new NotFound(`corpus ${JSON.stringify(ref)} has no objects`);
  return { name: ref.replace(/\/$/, ""), files };
}

/** A corpus of local files (bench, tests, the CLI before upload). */
export function corpusFromFiles(
  paths: string[],
  name = paths.map((p) => basename(p)).join("+"),
): CorpusSource {
  return {
    name,
    files: paths.map((path) => ({
      name: path,
      size: Deno.statSync(path).size,
      open: async () => readChunks(await Deno.open(path)),
    })),
  };
}

/** A file as a stream of 1 MiB reads (its readable reads 64 KiB at a time, 16 times the calls). */
function readChunks(file: Deno.FsFile, chunkBytes = 1 << 20): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const chunk = new Uint8Array(chunkBytes);
        const n = await file.read(chunk);
        if (n === null) {
          file.close();
          controller.close();
        } else controller.enqueue(chunk.subarray(0, n));
      } catch (error) {
        file.close();
        controller.error(error);
      }
    },
    cancel() {
      file.close();
    },
  });
}

export const DEFAULT_BLOCK_BYTES = 2 * 1024 * 1024;

/** create_pretraining_data.py's defaults, plus ours. */
export function defaultSettings(maxSeqLength = 128): PretrainingSettings {
  return {
    maxSeqLength,
    // The reference uses 20 at 128: max_seq_length * masked_lm_prob, rounded up.
    maxPredictionsPerSeq: Math.ceil(maxSeqLength * 0.15),
    maskedLmProb: 0.15,
    shortSeqProb: 0.1,
    dupeFactor: 10,
    seed: 12345,
    wholeWordMask: false,
    randomNextProb: 0.5,
    blockBytes: DEFAULT_BLOCK_BYTES,
    maxShardBytes: DEFAULT_MAX_SHARD_BYTES,
    evalFraction: 0,
    packed: false,
  };
}

export interface BuildProgress {
  /** Corpus bytes read so far (as stored, i.e. compressed for `.gz`), and the total when known. */
  bytesRead: number;
  totalBytes?: number;
  documents: number;
  instances: number;
  shards: number;
}

export interface BuildOptions {
  store: ObjectStore;
  /** Shard set name: the set lands under `shards/<name>/`. */
  name: string;
  /** The corpus of a single-source build (weight 1); give this or `sources`. */
  corpus?: CorpusSource;
  /** Several corpora, read one after the other, each weighted; reported per source in the manifest. */
  sources?: WeightedSource[];
  vocab: { text: string; name?: string; lowercase?: boolean };
  /** Anything not given takes {@linkcode defaultSettings}. `maxPredictionsPerSeq` follows `maxSeqLength`. */
  settings?: Partial<PretrainingSettings>;
  overwrite?: boolean;
  /** Worker threads; 0 runs everything on the calling thread. @default navigator.hardwareConcurrency, at most 4 */
  workers?: number;
  signal?: AbortSignal;
  onProgress?: (progress: BuildProgress) => void;
  /** Recorded as the builder version in the manifest (lineage), e.g. the git commit. */
  builderVersion?: string;
  /** The job building the set, for lineage. */
  jobId?: string;
}

/** Checks every setting up front, naming the field and the rule. */
export function resolveSettings(partial: Partial<PretrainingSettings> = {}): PretrainingSettings {
  const base = defaultSettings(partial.maxSeqLength ?? 128);
  const settings: PretrainingSettings = { ...base, ...stripUndefined(partial) };
  const int = (field: keyof PretrainingSettings, lo: number, hi: number) => {
    const value = settings[field] as number;
    if (!Number.isInteger(value) || value < lo || value > hi) {
      throw new InvalidArgument(`${field} must be an integer in [${lo}, ${hi}]: got ${value}`);
    }
  };
  const prob = (field: keyof PretrainingSettings) => {
    const value = settings[field] as number;
    if (!(typeof value === "number" && value >= 0 && value <= 1)) {
      throw new InvalidArgument(`${field} must be a probability in [0, 1]: got ${value}`);
    }
  };
  int("maxSeqLength", 8, 65535);
  int("maxPredictionsPerSeq", 1, settings.maxSeqLength);
  int("dupeFactor", 1, 1000);
  int("seed", 0, Number.MAX_SAFE_INTEGER);
  int("blockBytes", 1024, 256 * 1024 * 1024);
  int("maxShardBytes", 4096, 2 ** 31);
  prob("maskedLmProb");
  prob("shortSeqProb");
  prob("randomNextProb");
  prob("evalFraction");
  if (typeof settings.packed !== "boolean") {
    throw new InvalidArgument(`packed must be a boolean: got ${JSON.stringify(settings.packed)}`);
  }
  if (settings.evalFraction >= 1) {
    throw new InvalidArgument(`evalFraction must be below 1: got ${settings.evalFraction}`);
  }
  if (settings.wholeWordMask) {
    settings.wwmSegmenter = "@node-rs/jieba@2.0.3 (default dict, HMM) + WordPiece ##";
  } else delete settings.wwmSegmenter;
  return settings;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Longest line kept whole, in UTF-8 bytes (a million CJK characters); a longer one is cut (a sentence
 * break) at a character boundary, so memory stays bounded.
 */
const MAX_LINE_BYTES = 3 << 20;
/** Leading and trailing whitespace up to this many bytes travels with a line (the worker trims it). */
const WHITESPACE_KEPT = 16;
const NEWLINE = 10;

/** UTF-8 length of the whitespace character (as String.prototype.trim sees it) at `i`, or 0. */
function whitespaceAt(w: Uint8Array, i: number, end: number): number {
  const b = w[i]!;
  if (b < 0x80) return b === 0x20 || (b >= 9 && b <= 13) ? 1 : 0;
  if (b === 0xc2) return i + 1 < end && w[i + 1] === 0xa0 ? 2 : 0;
  if (b < 0xe1 || b > 0xef || i + 2 >= end) return 0;
  return isWhitespace3(b, w[i + 1]!, w[i + 2]!) ? 3 : 0;
}

/** UTF-8 length of the whitespace character ending just before `end` (not before `start`), or 0. */
function whitespaceBefore(w: Uint8Array, start: number, end: number): number {
  const b = w[end - 1]!;
  if (b < 0x80) return b === 0x20 || (b >= 9 && b <= 13) ? 1 : 0;
  if (b === 0xa0 && end - 2 >= start && w[end - 2] === 0xc2) return 2;
  return end - 3 >= start && isWhitespace3(w[end - 3]!, w[end - 2]!, b) ? 3 : 0;
}

/** UTF-16 length of the UTF-8 text `w[from, to)`. */
function unitsOf(w: Uint8Array, from: number, to: number): number {
  let units = 0;
  for (let i = from; i < to; i++) {
    const b = w[i]!;
    if (b < 0x80 || b >= 0xc0) units += b >= 0xf0 ? 2 : 1;
  }
  return units;
}

/** U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000, U+FEFF as three UTF-8 bytes. */
function isWhitespace3(b0: number, b1: number, b2: number): boolean {
  switch (b0) {
    case 0xe1:
      return b1 === 0x9a && b2 === 0x80;
    case 0xe2:
      return (b1 === 0x80 && ((b2 >= 0x80 && b2 <= 0x8a) || b2 === 0xa8 || b2 === 0xa9 || b2 === 0xaf)) ||
        (b1 === 0x81 && b2 === 0x9f);
    case 0xe3:
      return b1 === 0x80 && b2 === 0x80;
    case 0xef:
      return b1 === 0xbb && b2 === 0xbf;
    default:
      return false;
  }
}

/**
 * Cuts the corpus bytes into blocks of whole documents without decoding them (the workers do): lines
 * found by byte, their trimmed UTF-16 length counted from the UTF-8 (the size rule below), and runs of
 * lines copied into the block as they are. Same blocks as reading lines as strings: a document is
 * the non-blank lines between blank ones (a file boundary ends one too), its size 3 bytes per UTF-16
 * unit of its trimmed lines (near enough for Chinese, generous for Latin); a block ends with the
 * document that brings it to `blockBytes`, and a document reaching `blockBytes` alone is cut there.
 */
class BlockCutter {
  readonly ready: RawBlock[] = [];
  #block = new Uint8Array(0);
  #length = 0;
  #files: RawBlock["files"] = [];
  #blockSize = 0;
  #documentSize = 0;
  #documentLines = 0;
  /** The run of source bytes [runFrom, runTo) of `#source` still to be copied into the block. */
  #source: Uint8Array = new Uint8Array(0);
  #runFrom = 0;
  #runTo = 0;
  #file = "";
  /** Files started so far: tells a file from the next of the same name. */
  #fileSeq = 0;
  #runFileSeq = -1;
  #line = 0;
  /** UTF-16 units of the unfinished line `lines` stopped at. */
  #tailUnits = 0;
  /** The line the run starts at. */
  #runLine = 0;

  /** Blocks emitted so far (the next block's `sourceBlock`). */
  #blocks = 0;

  constructor(
    readonly blockBytes: number,
    readonly source: Pick<RawBlock, "source" | "weight"> = { source: 0, weight: 1 },
  ) {}

  /** The next lines come from `name`. */
  startFile(name: string): void {
    this.#file = name;
    this.#fileSeq++;
    this.#line = 0;
  }

  /**
   * Takes the complete lines of `bytes[from, to)` (and the rest too when `final`); returns where it
   * stopped. `bytes[from, searchFrom)` is known to hold no line break.
   */
  lines(bytes: Uint8Array, from: number, to: number, final: boolean, searchFrom = from): number {
    this.#source = bytes;
    this.#runFrom = this.#runTo = from;
    let at = from;
    // UTF-16 units of the line so far: one per character, two for a 4-byte one. One pass over the
    // bytes finds the line breaks and counts them (the calling thread's main cost: keep it tight).
    let units = searchFrom > from ? this.#tailUnits : 0;
    for (let i = searchFrom; i < to; i++) {
      const b = bytes[i]!;
      if (b === NEWLINE) {
        this.#lineAt(at, i, true, units);
        at = i + 1;
        units = 0;
      } else if (b < 0x80 || b >= 0xc0) units += b >= 0xf0 ? 2 : 1;
    }
    while (to - at > MAX_LINE_BYTES) {
      // Cut at the start of a character, never before a UTF-8 continuation byte.
      let cut = at + MAX_LINE_BYTES;
      while (cut > at && (bytes[cut]! & 0xc0) === 0x80) cut--;
      const pieceUnits = unitsOf(bytes, at, cut);
      this.#lineAt(at, cut, false, pieceUnits);
      this.#line--; // the same line goes on
      units -= pieceUnits;
      at = cut;
    }
    if (final && at < to) {
      this.#lineAt(at, to, false, units);
      at = to;
      units = 0;
    }
    this.#tailUnits = units;
    this.#flushRun();
    return at;
  }

  /** The end of a file: it ends the document. */
  endFile(): void {
    this.#endDocument(true);
  }

  /** The last block, if any. */
  finish(): void {
    this.#flushRun();
    if (this.#length > 0) this.#emit();
  }

  /** Line [from, to) of the source, followed by "\n" there when `newline`. */
  #lineAt(from: number, to: number, newline: boolean, units: number): void {
    const w = this.#source;
    this.#line++;
    // Trimmed whitespace is one UTF-16 unit a character.
    let start = from, end = to;
    for (let n = 0; start < end && (n = whitespaceAt(w, start, end)) > 0; units--) start += n;
    for (let n = 0; end > start && (n = whitespaceBefore(w, start, end)) > 0; units--) end -= n;
    if (start === end) {
      // A blank line ends the open document; it travels as the separator when short, else "\n" does.
      if (this.#documentLines === 0) return this.#breakRun();
      if (newline && to - from < WHITESPACE_KEPT) this.#addRun(from, to + 1);
      else this.#addNewline();
      this.#endDocument(false);
      return;
    }
    if (newline && (start - from) + (to - end) <= WHITESPACE_KEPT) this.#addRun(from, to + 1);
    else {
      this.#addRun(start, end);
      this.#addNewline();
    }
    this.#documentLines++;
    this.#documentSize += units * 3;
    // A document larger than a block is cut, so that no block outgrows its bound.
    if (this.#documentSize >= this.blockBytes) this.#endDocument(true);
  }

  #endDocument(separate: boolean): void {
    if (this.#documentLines > 0) {
      if (separate) this.#addNewline();
      this.#blockSize += this.#documentSize;
    }
    this.#documentLines = 0;
    this.#documentSize = 0;
    if (this.#blockSize >= this.blockBytes) {
      this.#flushRun();
      this.#emit();
    }
  }

  #addRun(from: number, to: number): void {
    if (from !== this.#runTo || this.#runFrom === this.#runTo) {
      this.#flushRun();
      this.#runFrom = from;
      this.#runLine = this.#line;
    }
    this.#runTo = to;
  }

  #breakRun(): void {
    this.#flushRun();
  }

  #addNewline(): void {
    this.#flushRun();
    this.#reserve(1);
    this.#block[this.#length++] = NEWLINE;
  }

  #flushRun(): void {
    const n = this.#runTo - this.#runFrom;
    if (n > 0) {
      const files = this.#files;
      if (files.length === 0 || this.#runFileSeq !== this.#fileSeq) {
        files.push({ name: this.#file, at: this.#length, line: this.#runLine });
        this.#runFileSeq = this.#fileSeq;
      }
      this.#reserve(n);
      this.#block.set(this.#source.subarray(this.#runFrom, this.#runTo), this.#length);
      this.#length += n;
    }
    this.#runFrom = this.#runTo;
  }

  #reserve(n: number): void {
    if (this.#length + n <= this.#block.length) return;
    // Chinese text takes about its size plus a line break per line; Latin text a third of it.
    const first = Math.min(Math.ceil(this.blockBytes * 1.25) + (1 << 16), 8 << 20);
    const size = Math.max(this.#length + n, this.#block.length * 2, first);
    const grown = new Uint8Array(size);
    grown.set(this.#block.subarray(0, this.#length));
    this.#block = grown;
  }

  #emit(): void {
    this.ready.push({
      bytes: this.#block.subarray(0, this.#length),
      files: this.#files,
      source: this.source.source,
      sourceBlock: this.#blocks++,
      weight: this.source.weight,
    });
    // The block's buffer goes to a worker (transferred): the next block gets a new one.
    this.#block = new Uint8Array(0);
    this.#length = 0;
    this.#files = [];
    this.#blockSize = 0;
  }
}

/**
 * Reads the corpus' bytes (hashing them as stored) and cuts them into blocks of whole documents, each
 * labelled with `source` (its index in the build and its weight). A `.gz` file is decompressed as it
 * streams, never whole.
 */
export async function* blocksOf(
  corpus: CorpusSource,
  blockBytes: number,
  hasher: { update(bytes: Uint8Array): unknown },
  counters: { bytesRead: number },
  source: Pick<RawBlock, "source" | "weight"> = { source: 0, weight: 1 },
): AsyncGenerator<RawBlock> {
  const cutter = new BlockCutter(blockBytes, source);
  // Bytes read but not cut yet: [from, to) of `pending`, the tail of a line that goes on in the next chunk.
  let pending = new Uint8Array(1 << 20);
  for (const file of corpus.files) {
    let raw = await file.open();
    const gzip = file.name.endsWith(".gz");
    if (gzip) {
      raw = raw.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            hasher.update(chunk);
            counters.bytesRead += chunk.byteLength;
            controller.enqueue(chunk);
          },
        }),
      ).pipeThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>);
    }
    cutter.startFile(file.name);
    let from = 0, to = 0;
    let first = true;
    for await (let chunk of raw) {
      if (!gzip) {
        hasher.update(chunk);
        counters.bytesRead += chunk.byteLength;
      }
      if (first && chunk.byteLength > 0) {
        first = false;
        // A byte order mark opens the file, not its text (as TextDecoder reads it; one split across
        // reads is trimmed as whitespace all the same).
        if (chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) chunk = chunk.subarray(3);
      }
      if (from === to) {
        // Nothing pending: cut the chunk where it lies, and keep only its unfinished last line.
        from = cutter.lines(chunk, 0, chunk.byteLength, false);
        to = chunk.byteLength;
        if (from < to) {
          if (pending.length < to - from) pending = new Uint8Array(Math.max(2 * (to - from), pending.length));
          pending.set(chunk.subarray(from, to));
          to -= from;
          from = 0;
        } else from = to = 0;
      } else {
        if (from > 0) {
          pending.copyWithin(0, from, to);
          to -= from;
          from = 0;
        }
        if (pending.length < to + chunk.byteLength) {
          const grown = new Uint8Array(Math.max(2 * pending.length, to + chunk.byteLength));
          grown.set(pending.subarray(0, to));
          pending = grown;
        }
        pending.set(chunk, to);
        const searchFrom = to;
        to += chunk.byteLength;
        from = cutter.lines(pending, 0, to, false, searchFrom);
        if (from === to) from = to = 0;
      }
      if (cutter.ready.length > 0) yield* cutter.ready.splice(0);
    }
    cutter.lines(pending, from, to, true);
    cutter.endFile();
    if (cutter.ready.length > 0) yield* cutter.ready.splice(0);
  }
  cutter.finish();
  yield* cutter.ready.splice(0);
}

/**
 * Runs blocks on worker threads (or inline when `workers` is 0); results come back per index. A block
 * goes to the worker with the fewest blocks queued, and its bytes are transferred, not copied.
 */
class BlockRunner {
  readonly #workers: Worker[] = [];
  readonly #queued: number[] = [];
  readonly #waiting = new Map<
    number,
    { worker: number; resolve: (r: BlockResult) => void; reject: (e: Error) => void }
  >();
  #failure: Error | null = null;
  #tokenizer: WordPieceTokenizer | null = null;
  #workspace: Promise<BlockWorkspace> | null = null;

  constructor(
    workers: number,
    readonly init: Extract<WorkerRequest, { type: "init" }>,
  ) {
    if (workers === 0) {
      this.#tokenizer = WordPieceTokenizer.fromVocabText(init.vocabText, { lowercase: init.lowercase });
      this.#workspace = BlockWorkspace.create(this.#tokenizer, init.settings);
      return;
    }
    for (let w = 0; w < workers; w++) {
      const worker = new Worker(new URL("./build_worker.ts", import.meta.url).href, { type: "module" });
      worker.onmessage = (event) => {
        const data = event.data as WorkerReply;
        if (data.type === "result") {
          const waiting = this.#waiting.get(data.result.index);
          this.#waiting.delete(data.result.index);
          if (waiting) {
            this.#queued[waiting.worker]!--;
            waiting.resolve(data.result);
            this.#wakeReader();
          }
        } else if (data.invalidArgument) {
          this.#fail(new InvalidArgument(data.message));
        } else {
          this.#fail(new Error(`build worker failed on block ${data.index}: ${data.message}`));
        }
      };
      worker.onerror = (event) => {
        event.preventDefault();
        this.#fail(new Error(`build worker crashed: ${event.message}`));
      };
      worker.postMessage(init);
      this.#workers.push(worker);
      this.#queued.push(0);
    }
  }

  get parallelism(): number {
    return Math.max(1, this.#workers.length);
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const { reject } of this.#waiting.values()) reject(error);
    this.#waiting.clear();
    this.#wakeReader();
  }

  /** Blocks a worker may hold: one running, one queued behind it. */
  static readonly DEPTH = 2;
  #readerWaiting: (() => void) | null = null;

  /** Resolves once a worker can take a block (at once without workers); rejects once one failed. */
  ready(): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#workers.length === 0 || this.#queued.some((n) => n < BlockRunner.DEPTH)) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => (this.#readerWaiting = resolve)).then(() => {
      if (this.#failure) throw this.#failure;
    });
  }

  #wakeReader(): void {
    const wake = this.#readerWaiting;
    this.#readerWaiting = null;
    wake?.();
  }

  run(index: number, block: RawBlock): Promise<BlockResult> {
    if (this.#failure) return Promise.reject(this.#failure);
    const tokenizer = this.#tokenizer;
    if (tokenizer) {
      const settings = this.init.settings;
      return this.#workspace!.then((workspace) =>
        processBlock(index, documentsOf(block), tokenizer, settings, workspace, block)
      );
    }
    let worker = 0;
    for (let w = 1; w < this.#queued.length; w++) if (this.#queued[w]! < this.#queued[worker]!) worker = w;
    return new Promise((resolve, reject) => {
      this.#waiting.set(index, { worker, resolve, reject });
      this.#queued[worker]!++;
      const request: WorkerRequest = { type: "block", index, block };
      this.#workers[worker]!.postMessage(request, [block.bytes.buffer as ArrayBuffer]);
    });
  }

  close(): void {
    for (const worker of this.#workers) worker.terminate();
    this.#workers.length = 0;
  }
}

/** The sources of a build: `options.sources`, or `options.corpus` alone at weight 1; weights checked. */
export function sourcesOf(options: Pick<BuildOptions, "corpus" | "sources">): WeightedSource[] {
  if (options.sources && options.corpus) throw new InvalidArgument("give corpus or sources, not both");
  const sources = options.sources ?? (options.corpus ? [{ corpus: options.corpus, weight: 1 }] : []);
  if (sources.length === 0) throw new InvalidArgument("sources must name at least one corpus");
  const seen = new Set<string>();
  sources.forEach((source, i) => {
    checkWeight(source.weight, `sources[${i}].weight`);
    if (seen.has(source.corpus.name)) {
      throw new InvalidArgument(
        `sources[${i}].corpus: '${source.corpus.name}' is given twice (weight it instead)`,
      );
    }
    seen.add(source.corpus.name);
  });
  if (sources.every((source) => source.weight === 0)) {
    throw new InvalidArgument("sources: every weight is 0, so nothing would be built");
  }
  return sources;
}

/**
 * Builds `shards/<name>/` from the corpus, or the sources one after the other (each source's blocks
 * hold its documents only, so its weight and its report apply block by block; the blocks of all
 * sources go to the same workers). ALREADY_EXISTS for an existing set unless `overwrite`; CANCELLED
 * when `signal` aborts (the partial set is removed and never looks complete).
 */
export async function buildPretrainingShards(options: BuildOptions): Promise<ShardManifest> {
  validateName(options.name);
  const sources = sourcesOf(options);
  const settings = resolveSettings(options.settings);
  const lowercase = options.vocab.lowercase ?? true;
  const blockSettings: BlockSettings = {
    seed: settings.seed,
    maxSeqLength: settings.maxSeqLength,
    maxPredictionsPerSeq: settings.maxPredictionsPerSeq,
    maskedLmProb: settings.maskedLmProb,
    shortSeqProb: settings.shortSeqProb,
    randomNextProb: settings.randomNextProb,
    dupeFactor: settings.dupeFactor,
    wholeWordMask: settings.wholeWordMask,
    evalFraction: settings.evalFraction,
    packed: settings.packed ?? false,
  };
  const workers = options.workers ?? Math.min(4, navigator.hardwareConcurrency || 1);
  // Workers first: they start (modules, vocab, jieba) while this thread reads the vocab and opens the set.
  const runner = new BlockRunner(workers, {
    type: "init",
    vocabText: options.vocab.text,
    lowercase,
    settings: blockSettings,
  });
  let tokenizer: WordPieceTokenizer, writer: ShardSetWriter;
  try {
    tokenizer = WordPieceTokenizer.fromVocabText(options.vocab.text, { lowercase });
    writer = await ShardSetWriter.create(options.store, options.name, {
      idBytes: idBytesFor(tokenizer.idToToken.length),
      maxSeqLen: settings.maxSeqLength,
      maxShardBytes: settings.maxShardBytes,
      overwrite: options.overwrite ?? false,
    });
  } catch (error) {
    runner.close();
    throw error;
  }
  const vocabSize = tokenizer.idToToken.length;
  const used = sources.filter((source) => source.weight > 0);
  // With several sources the corpus hash covers all their bytes in order, and each has its own.
  const hasher = new Sha256();
  const counters = { bytesRead: 0 };
  const totals: BlockStats = {
    documents: 0,
    sentences: 0,
    instances: 0,
    tokens: 0,
    maskedTokens: 0,
    randomNext: 0,
  };
  const reports: SourceReport[] = sources.map((source) => ({
    name: source.corpus.name,
    sha256: "",
    weight: source.weight,
    bytes: 0,
    documents: 0,
    characters: 0,
    documentsUsed: 0,
    instances: 0,
    tokens: 0,
    evalInstances: 0,
  }));
  const files = used.flatMap((source) => source.corpus.files);
  const totalBytes = files.every((f) => f.size !== undefined)
    ? files.reduce((sum, f) => sum + f.size!, 0)
    : undefined;
  const checkAbort = () => {
    if (options.signal?.aborted) throw new Cancelled(`building shard set '${options.name}' was cancelled`);
  };
  const write = async (result: BlockResult) => {
    checkAbort();
    await writer.addRecords(result.train.records, result.train.offsets, "train");
    await writer.addRecords(result.eval.records, result.eval.offsets, "eval");
    for (const key of Object.keys(totals) as (keyof BlockStats)[]) totals[key] += result.train.stats[key];
    const report = reports[result.source]!;
    report.documents += result.documentsRead;
    report.characters += result.characters;
    report.documentsUsed += result.train.stats.documents + result.eval.stats.documents;
    report.instances += result.train.stats.instances;
    report.tokens += result.train.stats.tokens;
    report.evalInstances += result.eval.stats.instances;
    options.onProgress?.({
      bytesRead: counters.bytesRead,
      ...(totalBytes !== undefined ? { totalBytes } : {}),
      documents: totals.documents,
      instances: totals.instances,
      shards: writer.shardsWritten,
    });
  };
  try {
    // A block goes out as soon as a worker has room (one running, one queued), whichever worker that
    // is; results are written in block order, so a few finished blocks may wait for a slower one
    // (up to `window` blocks between reading and writing) rather than an idle worker for it.
    const window = 4 * runner.parallelism;
    const inFlight: { result: Promise<BlockResult>; done: boolean }[] = [];
    let index = 0;
    for (const [s, source] of sources.entries()) {
      if (source.weight === 0) continue;
      const own = used.length > 1 ? new Sha256() : hasher;
      const both = own === hasher ? hasher : {
        update(bytes: Uint8Array) {
          hasher.update(bytes);
          own.update(bytes);
        },
      };
      const before = counters.bytesRead;
      const cut = blocksOf(source.corpus, settings.blockBytes, both, counters, {
        source: s,
        weight: source.weight,
      });
      for await (const block of cut) {
        checkAbort();
        await runner.ready();
        const entry = { result: runner.run(index++, block), done: false };
        // Rejections are observed when the entry is awaited in order.
        entry.result.then(() => (entry.done = true), () => (entry.done = true));
        inFlight.push(entry);
        while (inFlight.length > 0 && (inFlight[0]!.done || inFlight.length >= window)) {
          await write(await inFlight.shift()!.result);
        }
      }
      reports[s]!.bytes = counters.bytesRead - before;
      reports[s]!.sha256 = own === hasher ? "" : own.hex();
    }
    while (inFlight.length > 0) await write(await inFlight.shift()!.result);
    checkAbort();
    const corpusName = used.length === 1 ? used[0]!.corpus.name : used.map((u) => u.corpus.name).join("+");
    if (totals.instances === 0) {
      throw new InvalidArgument(`corpus ${corpusName} produced no instances (is it empty?)`);
    }
    const corpusSha = hasher.hex();
    for (const report of reports) if (report.weight > 0 && report.sha256 === "") report.sha256 = corpusSha;
    const fields = {
      tokens: totals.tokens,
      maskedTokens: totals.maskedTokens,
      randomNext: totals.randomNext,
      vocab: {
        ...(options.vocab.name ? { name: options.vocab.name } : {}),
        sha256: tokenizer.hash(),
        size: vocabSize,
        clsId: tokenizer.clsId,
        sepId: tokenizer.sepId,
        maskId: tokenizer.maskId,
        padId: tokenizer.padId,
      },
      corpus: {
        name: corpusName,
        sha256: corpusSha,
        bytes: counters.bytesRead,
        // Documents read, each once (document uses, copies counted, are per source).
        documents: reports.reduce((sum, r) => sum + r.documents, 0),
        sentences: totals.sentences,
        files: files.map((f) => f.name),
      },
      sources: reports,
      settings: { ...settings },
      builder: {
        name: "bertforge-sharding",
        ...(options.builderVersion ? { version: options.builderVersion } : {}),
      },
    };
    // The set carries its vocab (so it decodes without the vocab artifact) and its lineage, in the
    // shape of the Lineage message of common.proto: one corpus input per source that was read.
    const lineage = {
      artifact: { kind: "ARTIFACT_KIND_SHARDS", name: options.name, prefix: `shards/${options.name}/` },
      inputs: [
        ...reports.filter((r) => r.weight > 0).map((r) => ({
          role: "corpus",
          ref: {
            kind: "ARTIFACT_KIND_CORPUS",
            name: r.name,
            sha256: r.sha256,
            ...(r.name.includes("/") ? {} : { prefix: `corpora/${r.name}/` }),
          },
        })),
        {
          role: "vocab",
          ref: { kind: "ARTIFACT_KIND_VOCAB", name: options.vocab.name ?? "", sha256: fields.vocab.sha256 },
        },
      ],
      settings: Object.fromEntries(Object.entries(settings).map(([k, v]) => [k, String(v)])),
      code_version: options.builderVersion ?? "",
      job_id: options.jobId ?? "",
      created_at: new Date().toISOString(),
    };
    return await writer.finish(fields, {
      "vocab.txt": options.vocab.text,
      "lineage.json": JSON.stringify(lineage, null, 2),
    });
  } catch (error) {
    await writer.abort().catch(() => {});
    throw error;
  } finally {
    runner.close();
  }
}

/**
 * `deno run -A services/sharding/build.ts --store DIR --vocab vocab.txt --name NAME [--seq-len 128]
 * [--dupe-factor 10] [--wwm] [--packed] [--seed N] [--workers N] [--max-shard-mb 64] [--overwrite] FILE...`:
 * a build without the service, into a local store folder.
 */
async function cli(args: string[]): Promise<void> {
  const { parseArgs } = await import("@std/cli");
  const { LocalStore } = await import("../shared/store/local.ts");
  const flags = parseArgs(args, {
    string: [
      "store",
      "vocab",
      "name",
      "seq-len",
      "dupe-factor",
      "seed",
      "workers",
      "max-shard-mb",
      "block-kb",
    ],
    boolean: ["wwm", "overwrite", "packed"],
  });
  const files = flags._.map(String);
  if (!flags.store || !flags.vocab || !flags.name || files.length === 0) {
    console.error(
      "usage: build.ts --store DIR --vocab vocab.txt --name NAME [--seq-len N] [--wwm] [--packed] FILE...",
    );
    Deno.exit(2);
  }
  const num = (value: string | undefined) => (value === undefined ? undefined : Number(value));
  const manifest = await buildPretrainingShards({
    store: new LocalStore(flags.store),
    name: flags.name,
    corpus: corpusFromFiles(files),
    vocab: { text: await Deno.readTextFile(flags.vocab), name: flags.vocab },
    settings: {
      ...(flags["seq-len"] ? { maxSeqLength: num(flags["seq-len"]) } : {}),
      ...(flags["dupe-factor"] ? { dupeFactor: num(flags["dupe-factor"]) } : {}),
      ...(flags.seed ? { seed: num(flags.seed) } : {}),
      ...(flags["max-shard-mb"]
        ? { maxShardBytes: Math.round(num(flags["max-shard-mb"])! * 1024 * 1024) }
        : {}),
      ...(flags["block-kb"] ? { blockBytes: Math.round(num(flags["block-kb"])! * 1024) } : {}),
      wholeWordMask: flags.wwm,
      packed: flags.packed,
    },
    overwrite: flags.overwrite,
    ...(flags.workers ? { workers: num(flags.workers) } : {}),
    onProgress: (p) => console.error(JSON.stringify({ progress: p })),
  });
  console.log(
    JSON.stringify({ name: manifest.name, instances: manifest.instances, shards: manifest.shards.length }),
  );
}

if (import.meta.main) await cli(Deno.args);

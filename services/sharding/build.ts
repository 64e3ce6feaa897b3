/**
 * Builds a pretraining shard set from a corpus, in bounded memory:
 *
 *   corpus files (store objects or local files, `.gz` decompressed while streaming, sha256 hashed)
 *     → lines → documents (blank line = document break)
 *     → blocks of whole documents (~`blockBytes` of text each)
 *     → workers: tokenize, NSP pairs, masks, encode (block.ts; one RNG per block from (seed, block))
 *     → records streamed in block order into shards of at most `maxShardBytes`
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
import type { PretrainingSettings, ShardManifest } from "../shared/shards/manifest.ts";
import { validateShardSetName } from "../shared/shards/manifest.ts";
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
  processBlock,
} from "./block.ts";
import type { WorkerRequest } from "./build_worker.ts";

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
    const prefix = `corpora/${validateShardSetName(ref, "corpus")}`;
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
      open: async () => (await Deno.open(path)).readable,
    })),
  };
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
  corpus: CorpusSource;
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

/** Longest line kept whole; a longer one is cut (a sentence break) so memory stays bounded. */
const MAX_LINE_CHARS = 1 << 20;

async function* linesOf(text: ReadableStream<string>): AsyncGenerator<string> {
  let pending = "";
  for await (const chunk of text) {
    pending += chunk;
    let from = 0;
    for (let nl = pending.indexOf("\n", from); nl >= 0; nl = pending.indexOf("\n", from)) {
      yield pending.slice(from, nl);
      from = nl + 1;
    }
    pending = pending.slice(from);
    while (pending.length > MAX_LINE_CHARS) {
      yield pending.slice(0, MAX_LINE_CHARS);
      pending = pending.slice(MAX_LINE_CHARS);
    }
  }
  if (pending) yield pending;
}

/** Blocks of whole documents, each a list of lines; a file boundary is a document boundary too. */
async function* blocksOf(
  corpus: CorpusSource,
  blockBytes: number,
  hasher: Sha256,
  counters: { bytesRead: number },
): AsyncGenerator<string[][]> {
  let block: string[][] = [];
  let blockSize = 0;
  for (const file of corpus.files) {
    let raw = await file.open();
    raw = raw.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          hasher.update(chunk);
          counters.bytesRead += chunk.byteLength;
          controller.enqueue(chunk);
        },
      }),
    );
    if (file.name.endsWith(".gz")) {
      raw = raw.pipeThrough(
        new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
      );
    }
    let document: string[] = [];
    let documentSize = 0;
    const endDocument = function* (): Generator<string[][]> {
      if (document.length > 0) {
        block.push(document);
        blockSize += documentSize;
      }
      document = [];
      documentSize = 0;
      if (blockSize >= blockBytes) {
        yield block;
        block = [];
        blockSize = 0;
      }
    };
    // Strict decoding: a binary or mis-encoded file is refused, not turned into replacement characters.
    const lines = linesOf(raw.pipeThrough(new TextDecoderStream("utf-8", { fatal: true })));
    let lineNumber = 0;
    for (;;) {
      let next: IteratorResult<string>;
      try {
        next = await lines.next();
      } catch (error) {
        if (error instanceof TypeError) {
          throw new InvalidArgument(
            `corpus file ${file.name}: not valid UTF-8 text (decoding failed after ${lineNumber} complete lines)`,
          );
        }
        throw error;
      }
      if (next.done) break;
      lineNumber++;
      const line = next.value.trim();
      if (line === "") {
        yield* endDocument();
        continue;
      }
      document.push(line);
      documentSize += line.length * 3; // UTF-8 bytes, near enough for Chinese, generous for Latin
      // A document larger than a block is cut, so that no block outgrows its bound.
      if (documentSize >= blockBytes) yield* endDocument();
    }
    yield* endDocument();
  }
  if (block.length > 0) yield block;
}

/** Runs blocks on worker threads (or inline when `workers` is 0); results come back per index. */
class BlockRunner {
  readonly #workers: Worker[] = [];
  readonly #waiting = new Map<number, { resolve: (r: BlockResult) => void; reject: (e: Error) => void }>();
  #failure: Error | null = null;
  #tokenizer: WordPieceTokenizer | null = null;
  #workspace: Promise<BlockWorkspace> | null = null;

  constructor(
    workers: number,
    readonly init: Extract<WorkerRequest, { type: "init" }>,
  ) {
    if (workers === 0) {
      this.#tokenizer = WordPieceTokenizer.fromVocabText(init.vocabText, { lowercase: init.lowercase });
      this.#workspace = BlockWorkspace.create(this.#tokenizer, init.settings, init.idBytes);
      return;
    }
    for (let w = 0; w < workers; w++) {
      const worker = new Worker(new URL("./build_worker.ts", import.meta.url).href, { type: "module" });
      worker.onmessage = (event) => {
        const data = event.data as
          | { type: "result"; result: BlockResult }
          | { type: "error"; index: number; message: string };
        if (data.type === "result") {
          this.#waiting.get(data.result.index)?.resolve(data.result);
          this.#waiting.delete(data.result.index);
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
    }
  }

  get parallelism(): number {
    return Math.max(1, this.#workers.length);
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const { reject } of this.#waiting.values()) reject(error);
    this.#waiting.clear();
  }

  run(index: number, documents: string[][]): Promise<BlockResult> {
    if (this.#failure) return Promise.reject(this.#failure);
    const tokenizer = this.#tokenizer;
    if (tokenizer) {
      const settings = this.init.settings;
      return this.#workspace!.then((workspace) =>
        processBlock(index, documents, tokenizer, settings, workspace)
      );
    }
    return new Promise((resolve, reject) => {
      this.#waiting.set(index, { resolve, reject });
      const request: WorkerRequest = { type: "block", index, documents };
      this.#workers[index % this.#workers.length]!.postMessage(request);
    });
  }

  close(): void {
    for (const worker of this.#workers) worker.terminate();
    this.#workers.length = 0;
  }
}

/**
 * Builds `shards/<name>/` from the corpus. ALREADY_EXISTS for an existing set unless `overwrite`;
 * CANCELLED when `signal` aborts (the partial set is removed and never looks complete).
 */
export async function buildPretrainingShards(options: BuildOptions): Promise<ShardManifest> {
  validateShardSetName(options.name);
  const settings = resolveSettings(options.settings);
  const lowercase = options.vocab.lowercase ?? true;
  const tokenizer = WordPieceTokenizer.fromVocabText(options.vocab.text, { lowercase });
  const vocabSize = tokenizer.idToToken.length;
  const idBytes = idBytesFor(vocabSize);
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
  };
  const workers = options.workers ?? Math.min(4, navigator.hardwareConcurrency || 1);
  const writer = await ShardSetWriter.create(options.store, options.name, {
    idBytes,
    maxSeqLen: settings.maxSeqLength,
    maxShardBytes: settings.maxShardBytes,
    overwrite: options.overwrite ?? false,
  });
  const runner = new BlockRunner(workers, {
    type: "init",
    vocabText: options.vocab.text,
    lowercase,
    settings: blockSettings,
    idBytes,
  });
  const hasher = new Sha256();
  const counters = { bytesRead: 0 };
  let evalDocuments = 0;
  const totals: BlockStats = {
    documents: 0,
    sentences: 0,
    instances: 0,
    tokens: 0,
    maskedTokens: 0,
    randomNext: 0,
  };
  const totalBytes = options.corpus.files.every((f) => f.size !== undefined)
    ? options.corpus.files.reduce((sum, f) => sum + f.size!, 0)
    : undefined;
  const checkAbort = () => {
    if (options.signal?.aborted) throw new Cancelled(`building shard set '${options.name}' was cancelled`);
  };
  const write = async (result: BlockResult) => {
    checkAbort();
    await writer.addRecords(result.train.records, result.train.offsets, "train");
    await writer.addRecords(result.eval.records, result.eval.offsets, "eval");
    for (const key of Object.keys(totals) as (keyof BlockStats)[]) totals[key] += result.train.stats[key];
    evalDocuments += result.eval.stats.documents;
    options.onProgress?.({
      bytesRead: counters.bytesRead,
      ...(totalBytes !== undefined ? { totalBytes } : {}),
      documents: totals.documents,
      instances: totals.instances,
      shards: writer.shardsWritten,
    });
  };
  try {
    // Two blocks per worker in flight: one running, one queued, so no worker waits for the reader.
    const maxInFlight = 2 * runner.parallelism;
    const inFlight: Promise<BlockResult>[] = [];
    let index = 0;
    for await (const block of blocksOf(options.corpus, settings.blockBytes, hasher, counters)) {
      checkAbort();
      const pending = runner.run(index++, block);
      pending.catch(() => {}); // observed when awaited in order
      inFlight.push(pending);
      if (inFlight.length >= maxInFlight) await write(await inFlight.shift()!);
    }
    while (inFlight.length > 0) await write(await inFlight.shift()!);
    checkAbort();
    if (totals.instances === 0) {
      throw new InvalidArgument(`corpus ${options.corpus.name} produced no instances (is it empty?)`);
    }
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
        name: options.corpus.name,
        sha256: hasher.hex(),
        bytes: counters.bytesRead,
        documents: totals.documents + evalDocuments,
        sentences: totals.sentences,
        files: options.corpus.files.map((f) => f.name),
      },
      settings: { ...settings },
      builder: {
        name: "bertforge-sharding",
        ...(options.builderVersion ? { version: options.builderVersion } : {}),
      },
    };
    // The set carries its vocab (so it decodes without the vocab artifact) and its lineage, in the
    // shape of the Lineage message of common.proto.
    const lineage = {
      artifact: { kind: "ARTIFACT_KIND_SHARDS", name: options.name, prefix: `shards/${options.name}/` },
      inputs: [
        {
          role: "corpus",
          ref: {
            kind: "ARTIFACT_KIND_CORPUS",
            name: fields.corpus.name,
            sha256: fields.corpus.sha256,
            ...(fields.corpus.name.includes("/") ? {} : { prefix: `corpora/${fields.corpus.name}/` }),
          },
        },
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
 * [--dupe-factor 10] [--wwm] [--seed N] [--workers N] [--max-shard-mb 64] [--overwrite] FILE...`:
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
    boolean: ["wwm", "overwrite"],
  });
  const files = flags._.map(String);
  if (!flags.store || !flags.vocab || !flags.name || files.length === 0) {
    console.error("usage: build.ts --store DIR --vocab vocab.txt --name NAME [--seq-len N] [--wwm] FILE...");
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

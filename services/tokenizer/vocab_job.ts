/**
 * The `train_vocab` job: streams a corpus out of the store (`corpora/<name>/`, plain or gzipped UTF-8
 * text), learns a WordPiece vocabulary with trainWordPiece and publishes it under `vocabs/<name>/`.
 * Memory holds the word counts, never the corpus. Progress events count corpus bytes read.
 */
import { AlreadyExists, InvalidArgument, NotFound } from "../shared/errors.ts";
import type { JobContext, JobKind } from "../shared/jobs/mod.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { isPublished, readManifest } from "../shared/store/publish.ts";
import { validateName } from "../shared/store/names.ts";
import {
  publishVocab,
  SPECIAL_TOKENS,
  trainWordPiece,
  vocabInfo,
  vocabPrefix,
} from "../shared/wordpiece/mod.ts";

export const TRAIN_VOCAB_KIND = "train_vocab";

/** StartTrainVocabRequest with the server defaults filled in. */
export interface TrainVocabSpec {
  name: string;
  corpus: string;
  vocabSize: number;
  minFrequency: number;
  lowercase: boolean;
  specialTokens: string[];
  /** 0: 1000 plus every CJK character seen. */
  limitAlphabet: number;
  overwrite: boolean;
  /** 0 reads the whole corpus. */
  maxCorpusBytes: number;
}

export interface TrainVocabResult {
  vocab: string;
  sha256: string;
  size: number;
  lines: number;
  words: number;
}

export function corpusPrefix(name: string, field = "corpus"): string {
  return `corpora/${validateName(name, field)}`;
}

const num = (value: unknown) => Number(value ?? 0) || 0;

/** Checks a StartTrainVocabRequest (snake_case, as it arrives) and fills the defaults of tokenizer.proto. */
export function trainVocabSpec(request: Record<string, unknown>): TrainVocabSpec {
  const vocabSize = num(request.vocab_size ?? request.vocabSize) || 30000;
  if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > 1_000_000) {
    throw new InvalidArgument(`vocab_size: must be an integer in [1, 1000000], got ${vocabSize}`);
  }
  const specialTokens = (request.special_tokens ?? request.specialTokens ?? []) as string[];
  return {
    name: validateName(request.name, "name"),
    corpus: validateName(request.corpus, "corpus"),
    vocabSize,
    minFrequency: num(request.min_frequency ?? request.minFrequency) || 2,
    lowercase: request.lowercase === true,
    specialTokens: specialTokens.length > 0 ? [...specialTokens] : [...SPECIAL_TOKENS],
    limitAlphabet: num(request.limit_alphabet ?? request.limitAlphabet),
    overwrite: request.overwrite === true,
    maxCorpusBytes: num(request.max_corpus_bytes ?? request.maxCorpusBytes),
  };
}

/** Refusals that should come back from StartTrainVocab itself rather than as a failed job. */
export async function checkTrainVocabInputs(store: ObjectStore, spec: TrainVocabSpec): Promise<void> {
  if (!(await isPublished(store, corpusPrefix(spec.corpus)))) {
    throw new NotFound(`corpus: "${spec.corpus}" is not in the store (upload it with UploadCorpus)`);
  }
  if (!spec.overwrite && (await isPublished(store, vocabPrefix(spec.name, "name")))) {
    throw new AlreadyExists(`name: vocab "${spec.name}" already exists; set overwrite to replace it`);
  }
}

/**
 * The lines of every file of a stored corpus, in manifest order, decoded as strict UTF-8 (`.gz` parts
 * are gunzipped); `onBytes` gets the stored bytes read so far. Stops after `maxBytes` when set.
 */
export async function* corpusLines(
  store: ObjectStore,
  corpus: string,
  options: { maxBytes?: number; onBytes?: (bytes: number) => void; signal?: AbortSignal } = {},
): AsyncGenerator<string> {
  const manifest = await readManifest(store, corpusPrefix(corpus));
  let bytes = 0;
  for (const part of manifest.parts) {
    if (part.name === "lineage.json") continue;
    let stream: ReadableStream<Uint8Array> = (await store.getStream(`${manifest.prefix}/${part.name}`))
      .pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            bytes += chunk.length;
            options.onBytes?.(bytes);
            controller.enqueue(chunk);
          },
        }),
      );
    if (part.name.endsWith(".gz")) {
      stream = stream.pipeThrough(
        new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
      );
    }
    let pending = "";
    const decoder = new TextDecoder("utf-8", { fatal: true });
    try {
      for await (const chunk of stream) {
        options.signal?.throwIfAborted();
        pending += decoder.decode(chunk, { stream: true });
        const lines = pending.split("\n");
        pending = lines.pop()!;
        for (const line of lines) yield line;
        if (options.maxBytes && bytes >= options.maxBytes) {
          await stream.cancel().catch(() => {});
          return;
        }
      }
      pending += decoder.decode();
    } catch (error) {
      if (error instanceof TypeError && /decode|encoded/i.test(error.message)) {
        throw new InvalidArgument(`corpus ${corpus} file ${part.name}: not valid UTF-8 text`);
      }
      throw error;
    }
    if (pending !== "") yield pending;
  }
}

export function trainVocabJob(): JobKind<TrainVocabSpec, TrainVocabResult> {
  return {
    validate: (spec) => trainVocabSpec(spec as Record<string, unknown>),
    // Training keeps nothing worth resuming from: a restarted job simply runs again from the start.
    onInterrupted: "resume",
    run: runTrainVocab,
  };
}

async function runTrainVocab(ctx: JobContext<TrainVocabSpec>): Promise<TrainVocabResult> {
  const { spec, store } = ctx;
  if (ctx.resumeInfo.resumed) {
    // A run that died after publishing is done: do not fail it with AlreadyExists on the way back.
    const existing = await vocabInfo(store, spec.name).catch(() => null);
    if (existing?.lineage?.job_id === ctx.jobId) {
      return { vocab: spec.name, sha256: existing.sha256, size: existing.size, lines: 0, words: 0 };
    }
  }
  const manifest = await readManifest(store, corpusPrefix(spec.corpus)).catch(() => {
    throw new NotFound(`corpus: "${spec.corpus}" is not in the store`);
  });
  const storedBytes = manifest.parts.reduce((sum, p) => sum + p.size, 0);
  const totalBytes = spec.maxCorpusBytes ? Math.min(spec.maxCorpusBytes, storedBytes) : storedBytes;
  const started = performance.now();
  let lastReport = 0;
  const emitProgress = (done: number, total: number, unit: string, message: string) => {
    const now = performance.now();
    if (now - lastReport < 250 && done < total) return;
    lastReport = now;
    void ctx.emit({ type: "progress", message, progress: { done, total, unit } });
  };
  await ctx.emit({ type: "log", message: `reading corpus ${spec.corpus} (${totalBytes} bytes)` });
  let linesRead = 0, wordsSeen = 0;
  const tokenizer = await trainWordPiece(
    corpusLines(store, spec.corpus, {
      maxBytes: spec.maxCorpusBytes,
      signal: ctx.signal,
      onBytes: (bytes) => {
        const seconds = (performance.now() - started) / 1000;
        emitProgress(
          Math.min(bytes, totalBytes),
          totalBytes,
          "bytes",
          `read ${bytes} bytes (${Math.round(bytes / seconds)} B/s)`,
        );
      },
    }),
    {
      vocabSize: spec.vocabSize,
      minFrequency: spec.minFrequency,
      lowercase: spec.lowercase,
      specialTokens: spec.specialTokens,
      limitAlphabet: spec.limitAlphabet || 1000,
      limitAlphabetExemptsCjk: spec.limitAlphabet === 0,
      signal: ctx.signal,
      onProgress: (p) => {
        linesRead = p.lines;
        wordsSeen = p.words;
        if (p.stage === "merge") {
          emitProgress(p.vocabSize, p.targetVocabSize, "tokens", `vocab ${p.vocabSize}/${p.targetVocabSize}`);
        }
      },
    },
  );
  ctx.signal.throwIfAborted();
  const info = await publishVocab(store, spec.name, tokenizer, {
    source: "trained",
    overwrite: spec.overwrite,
    lineage: {
      job_id: ctx.jobId,
      inputs: [{ role: "corpus", name: spec.corpus, prefix: `${manifest.prefix}/`, parts: manifest.parts }],
      settings: {
        vocab_size: String(spec.vocabSize),
        min_frequency: String(spec.minFrequency),
        lowercase: String(spec.lowercase),
        limit_alphabet: String(spec.limitAlphabet),
        max_corpus_bytes: String(spec.maxCorpusBytes),
      },
    },
  });
  await ctx.emit({
    type: "artifact",
    message: `published vocab ${spec.name}: ${info.size} tokens, sha256 ${info.sha256}`,
    data: { vocab: info },
  });
  return { vocab: spec.name, sha256: info.sha256, size: info.size, lines: linesRead, words: wordsSeen };
}

/**
 * TokenizerService handlers (protos/bertforge/v1/tokenizer.proto): corpora in, vocabularies out, text
 * to ids. Handlers translate between proto messages and services/shared/wordpiece; the work itself is
 * there and in vocab_job.ts.
 */
import { BertforgeError, FailedPrecondition, InvalidArgument, ResourceExhausted } from "../shared/errors.ts";
import type { JobEvent, JobManager, JobRecord } from "../shared/jobs/mod.ts";
import { jobEventMessage, jobMessage } from "../shared/jobs/proto.ts";
import { jobHandlers } from "../shared/jobs/handlers.ts";
import { type Handlers, type Message, pageOf, receiveUpload } from "../shared/rpc/mod.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { ArtifactWriter } from "../shared/store/publish.ts";
import { validateName } from "../shared/store/names.ts";
import {
  type EncodeOptions,
  type Encoding,
  listVocabs,
  loadVocab,
  parseVocabText,
  publishVocab,
  type VocabInfo,
  vocabInfo,
  vocabPrefix,
  WordPieceTokenizer,
} from "../shared/wordpiece/mod.ts";
import { checkText, decodeUtf8, TextBudget } from "../shared/text/input.ts";
import { checkTrainVocabInputs, corpusPrefix, TRAIN_VOCAB_KIND, trainVocabSpec } from "./vocab_job.ts";

/** Inputs per Tokenize call; text sizes are bounded as in every service (services/shared/text/input.ts). */
export const MAX_INPUTS = 4096;

const num = (value: unknown) => Number(value ?? 0) || 0;

export interface TokenizerServiceOptions {
  store: ObjectStore;
  jobs: JobManager;
  /** Largest corpus upload in bytes. @default DEFAULT_MAX_UPLOAD_BYTES (rpc/streams.ts) */
  maxUploadBytes?: number;
}

export class TokenizerService {
  readonly store: ObjectStore;
  readonly jobs: JobManager;
  /** Loaded vocabularies by name, checked against the manifest's hash so an overwrite is seen. */
  readonly #vocabs = new Map<string, { tokenizer: WordPieceTokenizer; info: VocabInfo }>();
  readonly #uploadLimits: { maxBytes?: number };

  constructor(options: TokenizerServiceOptions) {
    this.store = options.store;
    this.jobs = options.jobs;
    this.#uploadLimits = options.maxUploadBytes ? { maxBytes: options.maxUploadBytes } : {};
  }

  handlers(): Handlers {
    return {
      UploadCorpus: (requests: AsyncIterable<Message>) => this.uploadCorpus(requests),
      StartTrainVocab: async (request: Message) => {
        const spec = trainVocabSpec(request);
        await checkTrainVocabInputs(this.store, spec);
        const id = await this.jobs.submit(TRAIN_VOCAB_KIND, spec);
        return { job: await this.jobMessage(await this.jobs.get(id)) };
      },
      ...jobHandlers({
        manager: this.jobs,
        jobMessage: (record) => this.jobMessage(record),
        eventMessage,
        listKind: (requested) => requested || TRAIN_VOCAB_KIND,
        finishedError: (record) =>
          new FailedPrecondition(`job_id: job ${record.id} already finished (${record.state})`),
      }),
      ImportVocab: (request: Message) => this.importVocab(request),
      ListVocabs: async (request: Message) => {
        const all = await listVocabs(this.store);
        const { items, page } = pageOf(all, request.page);
        return { vocabs: items.map(vocabMessage), page };
      },
      GetVocab: async (request: Message) => {
        const info = await vocabInfo(this.store, request.name, "name");
        const out: Message = { vocab: vocabMessage(info) };
        if (request.include_files) {
          out.vocab_txt = await this.store.get(`${vocabPrefix(info.name)}/vocab.txt`);
          out.tokenizer_json = await this.store.get(`${vocabPrefix(info.name)}/tokenizer.json`);
        }
        return out;
      },
      Tokenize: async (request: Message) => {
        const inputs = (request.inputs ?? []) as Message[];
        if (inputs.length > MAX_INPUTS) {
          throw new ResourceExhausted(`inputs: ${inputs.length} inputs, at most ${MAX_INPUTS} per request`);
        }
        // Every text is checked before any is tokenized: one oversized input costs nothing.
        const budget = new TextBudget();
        inputs.forEach((input, i) => checkInput(input, `inputs[${i}]`, budget));
        const { tokenizer, info } = await this.vocab(request.vocab);
        const options = encodeOptions(request.options ?? {});
        const encodings = inputs.map((input, i) => encodeInput(tokenizer, input, options, `inputs[${i}]`));
        padBatch(encodings, tokenizer, request.options ?? {});
        return { encodings: encodings.map(encodingMessage), vocab: info.name, vocab_sha256: info.sha256 };
      },
      TokenizeStream: (requests: AsyncIterable<Message>) => this.tokenizeStream(requests),
    };
  }

  /** A cached tokenizer for vocab `name` (NOT_FOUND when unknown), reloaded when it was republished. */
  async vocab(name: unknown, field = "vocab"): Promise<{ tokenizer: WordPieceTokenizer; info: VocabInfo }> {
    const checked = validateName(name, field);
    const current = await vocabInfo(this.store, checked, field);
    const cached = this.#vocabs.get(checked);
    if (cached && cached.info.sha256 === current.sha256 && cached.info.createdAt === current.createdAt) {
      return cached;
    }
    const loaded = await loadVocab(this.store, checked, field);
    this.#vocabs.set(checked, loaded);
    return loaded;
  }

  async *tokenizeStream(requests: AsyncIterable<Message>): AsyncGenerator<Message> {
    let vocabName = "";
    let options: Message | undefined;
    for await (const request of requests) {
      const id = request.id ?? "";
      try {
        if (!vocabName) {
          if (!request.vocab) {
            throw new InvalidArgument("vocab: the first message of the stream must name the vocab");
          }
          vocabName = request.vocab;
          options = request.options ?? {};
        }
        const { tokenizer } = await this.vocab(request.vocab || vocabName);
        const itemOptions = request.options ?? options ?? {};
        const input = request.input ?? {};
        checkInput(input, "input", new TextBudget());
        const encoding = encodeInput(tokenizer, input, encodeOptions(itemOptions), "input");
        padBatch([encoding], tokenizer, itemOptions);
        yield { id, encoding: encodingMessage(encoding) };
      } catch (error) {
        if (!(error instanceof BertforgeError)) throw error;
        yield { id, error: { code: error.code, message: error.message } };
      }
    }
  }

  async importVocab(request: Message): Promise<Message> {
    const name = validateName(request.name, "name");
    const text = decodeUtf8(request.vocab_txt ?? new Uint8Array(), "vocab_txt");
    if (text.trim() === "") {
      throw new InvalidArgument("vocab_txt: empty; send the contents of a BERT vocab.txt");
    }
    const vocab = parseVocabText(text, "vocab_txt");
    let options: { lowercase?: boolean; stripAccents?: boolean; tokenizeChineseChars?: boolean } = {};
    const json = request.tokenizer_json && request.tokenizer_json.length > 0
      ? decodeUtf8(request.tokenizer_json ?? new Uint8Array(), "tokenizer_json")
      : "";
    if (json) {
      const fromJson = WordPieceTokenizer.fromTokenizerJson(json);
      const o = fromJson.basicOptions;
      options = {
        lowercase: o.lowercase,
        stripAccents: o.stripAccents,
        tokenizeChineseChars: o.tokenizeChineseChars,
      };
      for (const [token, id] of fromJson.vocab) {
        if (vocab.vocab.get(token) !== id) {
          throw new InvalidArgument(
            `tokenizer_json: token ${JSON.stringify(token)} has id ${id} there but ${
              vocab.vocab.get(token) ?? "none"
            } in vocab_txt; the two files must describe the same vocabulary`,
          );
        }
      }
    }
    if (typeof request.lowercase === "boolean") {
      options = { ...options, lowercase: request.lowercase };
      if (!json) options.stripAccents = request.lowercase;
    }
    if (options.lowercase === undefined) {
      // No setting given: read the case from the vocabulary. An uncased one (bert-base-chinese,
      // bert-base-uncased) has next to no capitalised Latin tokens (bert-base-chinese: 4 of ~3,000 stray ones),
      // and reading it cased would turn every capitalised word into [UNK].
      let latin = 0, capitalised = 0;
      for (const token of vocab.vocab.keys()) {
        if (token.startsWith("[") || !/[A-Za-z]/.test(token)) continue;
        latin++;
        if (/[A-Z]/.test(token)) capitalised++;
      }
      const cased = capitalised > 0.01 * latin;
      options.lowercase = !cased;
      options.stripAccents = !cased;
    }
    const tokenizer = new WordPieceTokenizer(vocab, options);
    const info = await publishVocab(this.store, name, tokenizer, {
      source: "imported",
      overwrite: request.overwrite === true,
      lineage: {
        inputs: [{ role: "import", files: json ? ["vocab.txt", "tokenizer.json"] : ["vocab.txt"] }],
      },
    });
    this.#vocabs.delete(name);
    return { vocab: vocabMessage(info) };
  }

  /** Stores the uploaded text files under corpora/<name>/ (atomically), counting lines and documents. */
  async uploadCorpus(requests: AsyncIterable<Message>): Promise<Message> {
    const upload = await receiveUpload(requests, this.#uploadLimits);
    const name = validateName(upload.header.name, "chunk.header.name");
    const writer = await ArtifactWriter.begin(this.store, corpusPrefix(name, "chunk.header.name"), {
      overwrite: upload.header.overwrite === true,
    });
    let files = 0, lines = 0, documents = 0;
    try {
      for await (const file of upload.files()) {
        if (!/\.(txt|text|gz)$|^[^.]+$/.test(file.path.split("/").pop()!)) {
          throw new InvalidArgument(
            `chunk.file.path "${file.path}": a corpus holds plain text files (.txt, or .gz of text)`,
          );
        }
        const [toStore, toCount] = file.stream.tee();
        const [, counted] = await Promise.all([
          writer.put(file.path, toStore),
          countText(toCount, file.path.endsWith(".gz"), file.path),
        ]);
        lines += counted.lines;
        documents += counted.documents;
        files++;
      }
      if (files === 0) throw new InvalidArgument("chunk.file: the upload holds no file");
      const manifest = await writer.commit({
        kind: "corpus",
        name,
        files,
        lines,
        documents,
        description: upload.header.description ?? "",
      });
      const size = manifest.parts.reduce((sum, p) => sum + p.size, 0);
      const sha256 = manifest.parts.length === 1 ? manifest.parts[0].sha256 : "";
      return {
        corpus: {
          kind: "ARTIFACT_KIND_CORPUS",
          name,
          version: "",
          prefix: `${manifest.prefix}/`,
          sha256,
          size_bytes: String(size),
        },
        files,
        lines: String(lines),
        documents: String(documents),
      };
    } catch (error) {
      await writer.abort();
      throw error;
    }
  }

  async jobMessage(record: JobRecord): Promise<Message> {
    const spec = await this.jobs.getSpec<{ name?: string }>(record.id).catch(() => null);
    const result = record.result as { vocab?: string; sha256?: string } | undefined;
    return {
      ...jobMessage(record, spec, { unit: "" }),
      outputs: result?.vocab
        ? [{
          kind: "ARTIFACT_KIND_VOCAB",
          name: result.vocab,
          prefix: `vocabs/${result.vocab}/`,
          sha256: result.sha256 ?? "",
        }]
        : [],
    };
  }
}

function eventMessage(jobId: string, event: JobEvent, state: string, startedAt?: string): Message {
  const out = jobEventMessage(jobId, event, state, { startedAt, unit: "" });
  const vocab = (event.data as { vocab?: VocabInfo } | undefined)?.vocab;
  if (event.type === "artifact" && vocab) {
    out.artifact = {
      kind: "ARTIFACT_KIND_VOCAB",
      name: vocab.name,
      prefix: `vocabs/${vocab.name}/`,
      sha256: vocab.sha256,
    };
  }
  return out;
}

function vocabMessage(info: VocabInfo): Message {
  return {
    name: info.name,
    size: info.size,
    lowercase: info.lowercase,
    strip_accents: info.stripAccents,
    tokenize_chinese_chars: info.tokenizeChineseChars,
    special_tokens: info.specialTokens,
    sha256: info.sha256,
    source: info.source,
    created_at: info.createdAt,
    lineage: {
      artifact: {
        kind: "ARTIFACT_KIND_VOCAB",
        name: info.name,
        prefix: `vocabs/${info.name}/`,
        sha256: info.sha256,
      },
      inputs: [],
      settings: Object.fromEntries(
        Object.entries((info.lineage?.settings ?? {}) as Record<string, unknown>).map((
          [k, v],
        ) => [k, String(v)]),
      ),
      code_version: "",
      job_id: String(info.lineage?.job_id ?? ""),
      created_at: info.createdAt,
    },
  };
}

/**
 * Size and UTF-8 of one input's texts, as every service checks them (protobuf decodes invalid UTF-8 to
 * U+FFFD, which BERT's clean-up would drop silently: refused, naming the byte).
 */
function checkInput(input: Message, field: string, budget: TextBudget): void {
  checkText(String(input.text ?? ""), `${field}.text`, budget);
  checkText(String(input.text_pair ?? ""), `${field}.text_pair`, budget);
}

/** TokenizeOptions (proto) → EncodeOptions. */
export function encodeOptions(options: Message): EncodeOptions & { rejectLonger?: number } {
  const maxLength = num(options.max_length);
  const out: EncodeOptions & { rejectLonger?: number } = {};
  if (options.add_special_tokens === false) out.addSpecialTokens = false;
  if (maxLength === 0) {
    out.truncation = false;
    return out;
  }
  out.maxLength = maxLength;
  switch (options.truncation ?? "TRUNCATION_UNSPECIFIED") {
    case "TRUNCATION_NONE":
      out.truncation = false;
      out.rejectLonger = maxLength;
      break;
    case "TRUNCATION_ONLY_FIRST":
      out.truncationStrategy = "only_first";
      break;
    case "TRUNCATION_ONLY_SECOND":
      out.truncationStrategy = "only_second";
      break;
  }
  return out;
}

function encodeInput(
  tokenizer: WordPieceTokenizer,
  input: Message,
  options: EncodeOptions & { rejectLonger?: number },
  field: string,
): Encoding {
  const text = String(input.text ?? "");
  const pair = input.text_pair ? String(input.text_pair) : undefined;
  const encoding = tokenizer.encode(text, pair, options);
  if (options.rejectLonger !== undefined && encoding.ids.length > options.rejectLonger) {
    throw new InvalidArgument(
      `${field}: ${encoding.ids.length} tokens but options.max_length is ${options.rejectLonger} and truncation is TRUNCATION_NONE`,
    );
  }
  return encoding;
}

/** Padding of TokenizeOptions: to the longest of the batch or to max_length, rounded up to pad_to_multiple_of. */
function padBatch(encodings: Encoding[], tokenizer: WordPieceTokenizer, options: Message): void {
  const padding = options.padding ?? "PADDING_UNSPECIFIED";
  if (padding === "PADDING_UNSPECIFIED" || encodings.length === 0) return;
  let length = padding === "PADDING_MAX_LENGTH" && num(options.max_length) > 0
    ? num(options.max_length)
    : Math.max(...encodings.map((e) => e.ids.length));
  const multiple = num(options.pad_to_multiple_of) || 1;
  length = Math.ceil(length / multiple) * multiple;
  for (let i = 0; i < encodings.length; i++) {
    const e = encodings[i];
    if (e.ids.length >= length) continue;
    const pad = length - e.ids.length;
    encodings[i] = {
      ids: [...e.ids, ...Array(pad).fill(tokenizer.padId)],
      tokens: [...e.tokens, ...Array(pad).fill(tokenizer.idToToken[tokenizer.padId])],
      typeIds: [...e.typeIds, ...Array(pad).fill(0)],
      offsets: [...e.offsets, ...Array.from({ length: pad }, () => [0, 0] as [number, number])],
      attentionMask: [...e.attentionMask, ...Array(pad).fill(0)],
      specialTokensMask: [...e.specialTokensMask, ...Array(pad).fill(1)],
      ...(e.overflowed ? { overflowed: true } : {}),
    };
  }
}

function encodingMessage(e: Encoding): Message {
  return {
    tokens: e.tokens,
    ids: e.ids,
    type_ids: e.typeIds,
    offsets: e.offsets.map(([start, end]) => ({ start, end })),
    attention_mask: e.attentionMask,
    special_tokens_mask: e.specialTokensMask,
    truncated: e.overflowed === true,
  };
}

/** Lines and documents (blank-line separated) of one uploaded file; refuses bytes that are not UTF-8. */
async function countText(
  stream: ReadableStream<Uint8Array>,
  gzipped: boolean,
  path: string,
): Promise<{ lines: number; documents: number }> {
  const text = gzipped
    ? stream.pipeThrough(
      new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
    )
    : stream;
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let lines = 0, documents = 0, inDocument = false, pending = "";
  const take = (line: string) => {
    lines++;
    if (line.trim() === "") inDocument = false;
    else if (!inDocument) {
      inDocument = true;
      documents++;
    }
  };
  try {
    for await (const chunk of text) {
      pending += decoder.decode(chunk, { stream: true });
      const parts = pending.split("\n");
      pending = parts.pop()!;
      parts.forEach(take);
    }
    pending += decoder.decode();
  } catch (error) {
    if (error instanceof TypeError) {
      throw new InvalidArgument(
        `chunk.file "${path}": not valid UTF-8 text${gzipped ? " (or not gzip)" : ""}`,
      );
    }
    throw error;
  }
  if (pending !== "") take(pending);
  return { lines, documents };
}

/**
 * `deno task bertctl <command>`: the gRPC client of the fleet. It finds the services by `--port-base N` (the
 * number given to `fleet`) or by per-service addresses (`--tokenizer-addr`, BERTFORGE_TOKENIZER_ADDR, ...).
 * Local paths given where an artifact is expected are uploaded first. Job commands follow the job with a
 * progress bar (stderr) until it ends, unless `--detach`. `--json` prints JSON lines instead of bars and
 * tables. Exit codes: 0 ok, 1 failure, 2 usage error.
 */
import { basename, extname, join } from "@std/path";
import { parseArgs } from "@std/cli";
import { BertforgeError, InvalidArgument } from "../shared/errors.ts";
import { loadSettings, type ServiceKey, type Settings } from "../shared/config/settings.ts";
import { client, type RpcClient, waitForServing } from "../shared/rpc/client.ts";
import { fullServiceName, type ServiceName } from "../shared/rpc/load.ts";
import type { Message } from "../shared/rpc/serve.ts";
import { localUploadSources, saveDownload, uploadRequests, watchJob } from "../shared/rpc/streams.ts";
import { setupTelemetry, withSpan } from "../shared/telemetry/otel.ts";
import { consoleOutput, JobProgress, type Output, table } from "./ui.ts";
import { parseDuration } from "../shared/report/duration.ts";
import { PRETRAIN_OBJECTIVES } from "../shared/model/pretraining.ts";
import {
  checkReal,
  COUNT_LIMITS,
  formatRange,
  type IntRange,
  RATE_LIMITS,
  type RealRange,
} from "../shared/model/limits.ts";
import { corpusFilesIn, parseWeights, sourceNameOf } from "../shared/shards/sources.ts";
import { DEFAULT_DATA_DIR, runSuite, selectTasks, SUITE_TASKS, suiteTable } from "./suite.ts";

/** The largest value of a uint32 proto field: a flag past it would wrap silently on the wire. */
const UINT32_MAX = 0xffff_ffff;

/** Wrong use of the command line: exit code 2, with the usage of the command. */
export class UsageError extends Error {
  constructor(message: string, readonly usage?: string) {
    super(message);
    this.name = "UsageError";
  }
}

const SERVICE_OF: Record<ServiceKey, ServiceName> = {
  tokenizer: "TokenizerService",
  sharding: "ShardingService",
  trainer: "TrainerService",
  inference: "InferenceService",
};

/** Everything a command needs: parsed flags, clients by service, output. */
export class Context {
  readonly #clients = new Map<ServiceKey, RpcClient>();
  constructor(
    readonly command: string,
    readonly flags: Record<string, unknown>,
    readonly positional: string[],
    readonly settings: Settings,
    readonly out: Output,
  ) {}

  client(key: ServiceKey): RpcClient {
    let rpc = this.#clients.get(key);
    if (!rpc) {
      const tls = this.settings.tls?.caFile
        ? { tls: { caFile: this.settings.tls.caFile } }
        : this.flags.tls === true
        ? { tls: true as const }
        : {};
      rpc = client(SERVICE_OF[key], this.settings.peers[key], {
        ...(this.settings.authToken ? { authToken: this.settings.authToken } : {}),
        ...tls,
        retry: { maxAttempts: 3 },
      });
      this.#clients.set(key, rpc);
    }
    return rpc;
  }

  string(name: string): string | undefined {
    const value = this.flags[name];
    return typeof value === "string" && value !== "" ? value : undefined;
  }

  required(name: string): string {
    const value = this.string(name);
    if (value === undefined) throw new UsageError(`--${name} is required`);
    return value;
  }

  bool(name: string): boolean {
    return this.flags[name] === true;
  }

  /**
   * An integer flag in `range` (digits only: `1e12`, `-5` and `abc` are refused), or undefined when absent. The
   * default bound is the uint32 a proto field holds, so no value wraps on its way to a server.
   */
  int(name: string, range: Partial<IntRange> = {}): number | undefined {
    const { min = 1, max = UINT32_MAX } = range;
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    const value = Number(raw);
    if (!/^\d+$/.test(raw) || !Number.isSafeInteger(value) || value < min || value > max) {
      const rule = range.max === undefined ? `>= ${min} (at most ${max})` : `in [${min}, ${max}]`;
      throw new UsageError(`--${name} must be an integer ${rule}: got "${raw}"`);
    }
    return value;
  }

  /** A finite number flag, within `range` when given (the server's limits, limits.ts), or undefined when absent. */
  number(name: string, range?: RealRange): number | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    const value = Number(raw);
    if (!Number.isFinite(value)) throw new UsageError(`--${name} must be a number: got "${raw}"`);
    if (range) {
      try {
        checkReal(`--${name}`, value, range);
      } catch {
        throw new UsageError(`--${name} must be a number in ${formatRange(range)}: got "${raw}"`);
      }
    }
    return value;
  }

  close(): void {
    for (const rpc of this.#clients.values()) rpc.close();
  }
}

/** A MODEL[@VERSION] argument (`what` names it in the error); an empty version means the latest. */
function modelRef(ref: string, what: string): { name: string; version: string } {
  const [name = "", version = ""] = ref.split("@");
  if (!name) throw new UsageError(`${what} needs MODEL[@VERSION]: got "${ref}"`);
  return { name, version };
}

/** The MODEL[@VERSION] argument of the `models` commands. */
function positionalModel(ctx: Context): { name: string; version: string } {
  const ref = ctx.positional[0];
  if (!ref) throw new UsageError("give the model name");
  return modelRef(ref, "the model argument");
}

interface CommandSpec {
  /** `vocab train` */
  name: string;
  usage: string;
  strings?: string[];
  booleans?: string[];
  /** String flags that may repeat (each a string[]; also list them in `strings`). */
  collects?: string[];
  /** Which service answers it, for the "not available yet" message. */
  service: ServiceKey | "several";
  run(ctx: Context): Promise<number | void>;
}

// ---------------------------------------------------------------------------------------------------
// Artifacts given as local paths

/** `poems.txt` → `poems`: a valid artifact name from a file or folder name. */
export function artifactNameFromPath(path: string): string {
  const base = basename(path.replace(/[\\/]+$/, ""));
  const stem = base.endsWith(".gz") ? base.slice(0, -3) : base;
  const name = stem.slice(0, stem.length - extname(stem).length || undefined).replace(
    /[^A-Za-z0-9._-]+/g,
    "-",
  )
    .replace(/^[-.]+|[-.]+$/g, "").slice(0, 128);
  return name || "upload";
}

async function isLocalPath(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Uploads a local file or folder through an upload RPC; returns the artifact name. */
async function upload(
  ctx: Context,
  service: ServiceKey,
  method: string,
  path: string,
  name: string,
  format?: string,
  /** Keeps only the files of a folder this accepts (by path inside it); the rest are named as skipped. */
  only?: (path: string) => boolean,
): Promise<string> {
  let sources = await localUploadSources(path);
  if (only) {
    const skipped = sources.filter((s) => !only(s.path));
    sources = sources.filter((s) => only(s.path));
    if (sources.length === 0) throw new UsageError(`${path} holds no *.txt or *.txt.gz files`);
    if (skipped.length && !ctx.out.json) {
      ctx.out.note(
        `skipping ${skipped.length} file(s) that are not corpus text: ${
          skipped.map((s) => s.path).join(", ")
        }`,
      );
    }
  }
  const bytes = (await Promise.all(sources.map(async (s) => (await Deno.stat(s.source as string)).size)))
    .reduce((a, b) => a + b, 0);
  if (!ctx.out.json) {
    ctx.out.note(`uploading ${path} (${sources.length} file(s), ${formatBytes(bytes)}) as "${name}"`);
  }
  const response = await ctx.client(service).clientStream(
    method,
    uploadRequests({ name, overwrite: true, size_bytes: bytes, ...(format ? { format } : {}) }, sources),
  );
  if (ctx.out.json) ctx.out.jsonLine({ uploaded: path, name, response });
  return name;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

/** A corpus name, uploading a local path first (as `name`, by default --corpus-name or the path's). */
async function resolveCorpus(ctx: Context, value: string, name?: string): Promise<string> {
  if (!(await isLocalPath(value))) return value;
  return await upload(
    ctx,
    "tokenizer",
    "UploadCorpus",
    value,
    name ?? ctx.string("corpus-name") ?? artifactNameFromPath(value),
    undefined,
    // A folder of corpus files (README, SOURCES.md and the like beside them are not text to train on).
    (path) => sourceNameOf(path.split("/").pop()!) !== null,
  );
}

/**
 * The sources of `shards build`: every `--corpus` in order, a local folder as each of its `*.txt` /
 * `*.txt.gz` files (uploaded as a corpus of its own, named by the file name without that ending), a
 * local file uploaded as one corpus, anything else a corpus name in the store; weights from `--mix`
 * then `--source` (unknown names are a usage error listing the sources).
 */
async function resolveSources(ctx: Context): Promise<{ corpus: string; weight: number }[]> {
  const given = ctx.flags.corpus as string[] | undefined;
  if (!given || given.length === 0) throw new UsageError("--corpus is required");
  const names: string[] = [];
  for (const value of given) {
    if (!(await isLocalPath(value))) {
      names.push(value);
      continue;
    }
    if ((await Deno.stat(value)).isDirectory) {
      const files = await corpusFilesIn(value);
      if (files.length === 0) throw new UsageError(`--corpus ${value} holds no *.txt or *.txt.gz files`);
      for (const file of files) {
        names.push(await upload(ctx, "tokenizer", "UploadCorpus", file.path, file.name));
      }
    } else {
      const name = given.length === 1 ? ctx.string("corpus-name") : undefined;
      names.push(await resolveCorpus(ctx, value, name ?? artifactNameFromPath(value)));
    }
  }
  const twice = names.find((name, i) => names.indexOf(name) !== i);
  if (twice !== undefined) {
    throw new UsageError(`--corpus: source '${twice}' is given twice (weight it instead)`);
  }
  const entries: Parameters<typeof parseWeights>[0] = [];
  const mix = ctx.string("mix");
  if (mix !== undefined) {
    try {
      entries.push({ text: await Deno.readTextFile(mix), where: `--mix ${mix}`, form: "file" });
    } catch (error) {
      throw new UsageError(`--mix ${mix}: cannot read it (${(error as Error).message})`);
    }
  }
  for (const flag of (ctx.flags.source as string[] | undefined) ?? []) {
    entries.push({ text: flag, where: `--source ${flag}`, form: "flag" });
  }
  let weights: Map<string, number>;
  try {
    weights = parseWeights(entries, names);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (names.every((name) => weights.get(name) === 0)) {
    throw new UsageError("--source/--mix: every source has weight 0, so nothing would be built");
  }
  return names.map((corpus) => ({ corpus, weight: weights.get(corpus) ?? 1 }));
}

/** What each source gave a shard set (GetShards' ShardSet.sources) as a table or JSON lines. */
function printSources(ctx: Context, shardSet: Message): void {
  const sources: Message[] = shardSet.sources ?? [];
  if (ctx.out.json) return ctx.out.jsonLine({ name: shardSet.name, packed: !!shardSet.packed, sources });
  const total = (field: string) => sources.reduce((sum, s) => sum + Number(s[field] ?? 0), 0);
  ctx.out.line(table(
    ["SOURCE", "WEIGHT", "DOCUMENTS", "USED", "CHARACTERS", "INSTANCES", "TOKENS", "SHA256"],
    [
      ...sources.map((s) => [
        s.corpus,
        s.weight,
        s.documents,
        s.documents_used,
        s.characters,
        s.instances,
        s.tokens,
        String(s.sha256 || "-").slice(0, 12),
      ]),
      [
        "total",
        "",
        total("documents"),
        total("documents_used"),
        total("characters"),
        total("instances"),
        total("tokens"),
        "",
      ],
    ],
  ));
}

/** A dataset name, uploading a local file first. */
async function resolveDataset(ctx: Context, value: string, fallbackName: string): Promise<string> {
  if (!(await isLocalPath(value))) return value;
  return await upload(ctx, "trainer", "UploadDataset", value, fallbackName);
}

/** A vocab name; a local folder holding vocab.txt (or the file itself) is imported under a content-hash name. */
async function resolveVocab(ctx: Context, value: string): Promise<string> {
  if (!(await isLocalPath(value))) return value;
  const info = await Deno.stat(value);
  const dir = info.isDirectory
    ? value.replace(/[\\/]+$/, "")
    : value.slice(0, Math.max(0, value.lastIndexOf("/")));
  const vocabPath = info.isDirectory ? `${dir}/vocab.txt` : value;
  let vocabTxt: Uint8Array<ArrayBuffer>;
  try {
    vocabTxt = await Deno.readFile(vocabPath);
  } catch {
    throw new UsageError(`--vocab ${value} is a local path without a vocab.txt`);
  }
  let tokenizerJson = new Uint8Array();
  try {
    tokenizerJson = await Deno.readFile(`${dir || "."}/tokenizer.json`);
  } catch {
    // optional
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", vocabTxt));
  const hash = [...digest.slice(0, 6)].map((b) => b.toString(16).padStart(2, "0")).join("");
  const name = `${artifactNameFromPath(dir || vocabPath)}-${hash}`;
  const tokenizer = ctx.client("tokenizer");
  try {
    await tokenizer.unary("GetVocab", { name });
  } catch (error) {
    if ((error as BertforgeError).code !== "NOT_FOUND") throw error;
    if (!ctx.out.json) ctx.out.note(`importing ${vocabPath} as vocab "${name}"`);
    await tokenizer.unary("ImportVocab", {
      name,
      vocab_txt: vocabTxt,
      tokenizer_json: tokenizerJson,
      overwrite: true,
    });
  }
  return name;
}

// ---------------------------------------------------------------------------------------------------
// Jobs

const JOB_SERVICES: ServiceKey[] = ["tokenizer", "sharding", "trainer"];

/** The service owning a job, from the kind its id names (common.proto), or undefined when it names none. */
export function serviceOfJob(id: string): ServiceKey | undefined {
  if (/(^|-)train_vocab(-|$)/.test(id) || id.startsWith("vocab-")) return "tokenizer";
  if (/(^|-)build_pretraining(-|$)/.test(id) || id.startsWith("shards-")) return "sharding";
  if (/(^|-)(pretrain|finetune)(-|$)/.test(id) || id.startsWith("train-")) return "trainer";
  return undefined;
}

/** Follows a job to its end; returns the exit code (0 succeeded, 1 failed or cancelled). */
async function followJob(ctx: Context, service: ServiceKey, job: Message): Promise<number> {
  const id = String(job.id);
  if (ctx.bool("detach")) {
    if (ctx.out.json) ctx.out.jsonLine({ job });
    else ctx.out.line(id);
    return 0;
  }
  if (!ctx.out.json) {
    ctx.out.note(`job ${id} (${job.kind || ctx.command}) submitted; Ctrl-C stops watching, not the job`);
  } else ctx.out.jsonLine({ job });
  const progress = new JobProgress(ctx.out, id);
  let last: Message | undefined;
  for await (const event of watchJob(ctx.client(service), id)) {
    last = event;
    progress.event(event);
  }
  progress.finishLine();
  const { job: final } = await ctx.client(service).unary("GetJob", { job_id: id });
  const state = String(final?.state ?? last?.state ?? "");
  if (ctx.out.json) ctx.out.jsonLine({ job: final });
  else if (state === "JOB_STATE_SUCCEEDED") {
    const outputs = (final.outputs ?? []).map((o: Message) =>
      o.prefix || `${o.name}${o.version ? `@${o.version}` : ""}`
    );
    ctx.out.line(`${id} succeeded${outputs.length ? `: ${outputs.join(", ")}` : ""}`);
  } else {ctx.out.note(
      `${id} ${state.replace("JOB_STATE_", "").toLowerCase()}${final?.error ? `: ${final.error}` : ""}`,
    );}
  return state === "JOB_STATE_SUCCEEDED" ? 0 : 1;
}

function jobRow(job: Message): string[] {
  const progress = job.progress;
  const step = Number(progress?.step ?? 0);
  const total = Number(progress?.total ?? 0);
  return [
    job.id,
    job.kind,
    job.name,
    String(job.state).replace("JOB_STATE_", "").toLowerCase(),
    total > 0 ? `${Math.round((100 * step) / total)}%` : step > 0 ? String(step) : "",
    progress?.loss !== undefined ? Number(progress.loss).toFixed(4) : "",
    job.created_at,
  ];
}

// ---------------------------------------------------------------------------------------------------
// Commands

const TASKS: Record<string, string> = {
  classify: "TASK_TYPE_CLASSIFY",
  multilabel: "TASK_TYPE_MULTILABEL",
  pair: "TASK_TYPE_PAIR",
  ner: "TASK_TYPE_NER",
};

/** One EvaluationError as a line of `eval --errors` (the fields a task does not fill are left out). */
export function mistakeLine(e: Message): string {
  return JSON.stringify({
    line: e.line,
    text: e.text,
    ...(e.text_b ? { text_b: e.text_b } : {}),
    gold: e.gold,
    predicted: e.predicted,
    ...(e.confidence ? { confidence: e.confidence } : {}),
  }) + "\n";
}

function parseTask(ctx: Context): string {
  const task = ctx.required("task");
  const value = TASKS[task];
  if (!value) throw new UsageError(`--task must be one of ${Object.keys(TASKS).join(", ")}: got "${task}"`);
  return value;
}

async function readInputs(ctx: Context): Promise<string[]> {
  const text = ctx.string("text");
  const file = ctx.string("file");
  if ((text === undefined) === (file === undefined)) {
    throw new UsageError("give exactly one of --text or --file");
  }
  if (text !== undefined) return [text];
  let content: string;
  try {
    content = file === "-" ? await new Response(Deno.stdin.readable).text() : await Deno.readTextFile(file!);
  } catch (error) {
    throw new UsageError(`--file ${file} cannot be read: ${(error as Error).message}`);
  }
  return content.split(/\r?\n/).filter((line) => line.trim() !== "");
}

function chunked<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

const COMMANDS: CommandSpec[] = [
  {
    name: "vocab train",
    usage:
      "vocab train --corpus PATH|NAME --size N --name VOCAB [--min-frequency K] [--lowercase] [--overwrite] [--detach]",
    strings: ["corpus", "size", "name", "min-frequency", "corpus-name", "limit-alphabet"],
    booleans: ["lowercase", "overwrite", "detach"],
    service: "tokenizer",
    async run(ctx) {
      const size = ctx.int("size");
      if (size === undefined) throw new UsageError("--size is required");
      const name = ctx.required("name");
      const corpus = await resolveCorpus(ctx, ctx.required("corpus"));
      const { job } = await ctx.client("tokenizer").unary("StartTrainVocab", {
        name,
        corpus,
        vocab_size: size,
        min_frequency: ctx.int("min-frequency") ?? 0,
        limit_alphabet: ctx.int("limit-alphabet") ?? 0,
        lowercase: ctx.bool("lowercase"),
        overwrite: ctx.bool("overwrite"),
      });
      return await followJob(ctx, "tokenizer", job);
    },
  },
  {
    name: "vocab import",
    usage: "vocab import DIR|vocab.txt --name VOCAB [--overwrite]",
    strings: ["name"],
    booleans: ["overwrite", "lowercase"],
    service: "tokenizer",
    async run(ctx) {
      const path = ctx.positional[0];
      if (!path) throw new UsageError("give the folder holding vocab.txt (or the file)");
      const info = await Deno.stat(path).catch(() => undefined);
      if (!info) throw new UsageError(`${path} does not exist`);
      const dir = info.isDirectory ? path : path.slice(0, Math.max(0, path.lastIndexOf("/"))) || ".";
      const vocabTxt = await Deno.readFile(info.isDirectory ? `${dir}/vocab.txt` : path);
      const tokenizerJson = await Deno.readFile(`${dir}/tokenizer.json`).catch(() => new Uint8Array());
      const { vocab } = await ctx.client("tokenizer").unary("ImportVocab", {
        name: ctx.required("name"),
        vocab_txt: vocabTxt,
        tokenizer_json: tokenizerJson,
        overwrite: ctx.bool("overwrite"),
        ...(ctx.bool("lowercase") ? { lowercase: true } : {}),
      });
      if (ctx.out.json) ctx.out.jsonLine({ vocab });
      else ctx.out.line(`vocab ${vocab.name}: ${vocab.size} tokens, sha256 ${vocab.sha256}`);
    },
  },
  {
    name: "vocab list",
    usage: "vocab list",
    service: "tokenizer",
    async run(ctx) {
      const { vocabs } = await ctx.client("tokenizer").unary("ListVocabs", { page: { page_size: 1000 } });
      if (ctx.out.json) return vocabs.forEach((vocab: Message) => ctx.out.jsonLine(vocab));
      ctx.out.line(
        table(
          ["NAME", "SIZE", "LOWERCASE", "SOURCE", "SHA256", "CREATED"],
          vocabs.map((
            v: Message,
          ) => [v.name, v.size, v.lowercase, v.source, String(v.sha256).slice(0, 12), v.created_at]),
        ),
      );
    },
  },
  {
    name: "tokenize",
    usage:
      "tokenize --vocab VOCAB|DIR (--text T [--pair T2] | --file F) [--max-length N] [--no-special-tokens]",
    strings: ["vocab", "text", "pair", "file", "max-length"],
    booleans: ["no-special-tokens"],
    service: "tokenizer",
    async run(ctx) {
      const vocabArg = ctx.required("vocab");
      const inputs = await readInputs(ctx);
      const pair = ctx.string("pair");
      if (pair !== undefined && ctx.string("file") !== undefined) {
        throw new UsageError("--pair goes with --text");
      }
      const vocab = await resolveVocab(ctx, vocabArg);
      const maxLength = ctx.int("max-length");
      const options = {
        max_length: maxLength ?? 0,
        ...(ctx.bool("no-special-tokens") ? { add_special_tokens: false } : {}),
      };
      for (const batch of chunked(inputs, 512)) {
        const { encodings } = await ctx.client("tokenizer").unary("Tokenize", {
          vocab,
          inputs: batch.map((text) => ({ text, text_pair: pair ?? "" })),
          options,
        });
        for (const e of encodings) {
          ctx.out.jsonLine({
            tokens: e.tokens,
            ids: e.ids,
            type_ids: e.type_ids,
            offsets: e.offsets.map((o: Message) => [o.start, o.end]),
          });
        }
      }
    },
  },
  {
    name: "shards build",
    usage:
      "shards build --corpus PATH|DIR|NAME [--corpus ...] --vocab VOCAB|DIR --seq-len N [--wwm] [--packed]\n" +
      "             [--source NAME=WEIGHT ...] [--mix FILE] [--dupe-factor K] --name SHARDS\n" +
      "             [--masked-lm-prob P] [--max-predictions N] [--short-seq-prob P] [--seed S] [--overwrite] [--detach]\n" +
      "  DIR: each *.txt / *.txt.gz file is a source named by its file name without that ending;\n" +
      "  WEIGHT multiplies a source's documents (0.5 a seeded half, 2 each twice, 0 skips it; default 1);\n" +
      "  --mix FILE: 'name weight' lines; --packed: full rows of consecutive sentences, no NSP",
    strings: [
      "corpus",
      "source",
      "mix",
      "vocab",
      "seq-len",
      "dupe-factor",
      "name",
      "masked-lm-prob",
      "max-predictions",
      "short-seq-prob",
      "seed",
      "shard-size",
      "corpus-name",
    ],
    booleans: ["wwm", "overwrite", "detach", "packed"],
    collects: ["corpus", "source"],
    service: "sharding",
    async run(ctx) {
      const seqLen = ctx.int("seq-len", { min: 8 });
      if (seqLen === undefined) throw new UsageError("--seq-len is required");
      const name = ctx.required("name");
      const vocabArg = ctx.required("vocab");
      const sources = await resolveSources(ctx);
      const vocab = await resolveVocab(ctx, vocabArg);
      // One unweighted corpus keeps the single-corpus request; anything more names its sources.
      const single = sources.length === 1 && sources[0]!.weight === 1;
      const optional = (
        key: string,
        value: number | undefined,
      ) => (value === undefined ? {} : { [key]: value });
      const { job } = await ctx.client("sharding").unary("StartBuildPretraining", {
        name,
        ...(single ? { corpus: sources[0]!.corpus } : { sources }),
        ...(ctx.bool("packed") ? { packed: true } : {}),
        vocab,
        max_seq_length: seqLen,
        whole_word_masking: ctx.bool("wwm"),
        dupe_factor: ctx.int("dupe-factor") ?? 0,
        max_predictions_per_seq: ctx.int("max-predictions") ?? 0,
        shard_size_bytes: ctx.int("shard-size") ?? 0,
        overwrite: ctx.bool("overwrite"),
        ...optional("masked_lm_prob", ctx.number("masked-lm-prob")),
        ...optional("short_seq_prob", ctx.number("short-seq-prob")),
        ...optional("seed", ctx.int("seed", { min: 0 })),
      });
      const code = await followJob(ctx, "sharding", job);
      if (code === 0 && !ctx.bool("detach")) {
        printSources(ctx, (await ctx.client("sharding").unary("GetShards", { name })).shard_set);
      }
      return code;
    },
  },
  {
    name: "shards list",
    usage: "shards list",
    service: "sharding",
    async run(ctx) {
      const { shard_sets } = await ctx.client("sharding").unary("ListShards", { page: { page_size: 1000 } });
      if (ctx.out.json) return shard_sets.forEach((s: Message) => ctx.out.jsonLine(s));
      ctx.out.line(table(
        ["NAME", "VOCAB", "CORPUS", "SEQ_LEN", "WWM", "INSTANCES", "SHARDS", "SIZE", "CREATED"],
        shard_sets.map((s: Message) => [
          s.name,
          s.vocab,
          s.corpus,
          s.max_seq_length,
          s.whole_word_masking,
          s.instances,
          s.shards,
          formatBytes(Number(s.size_bytes)),
          s.created_at,
        ]),
      ));
    },
  },
  {
    name: "shards inspect",
    usage: "shards inspect NAME [--n K] [--offset I] [--eval]",
    strings: ["n", "offset"],
    booleans: ["eval"],
    service: "sharding",
    async run(ctx) {
      const name = ctx.positional[0];
      if (!name) throw new UsageError("give the shard set's name");
      printSources(ctx, (await ctx.client("sharding").unary("GetShards", { name })).shard_set);
      const { instances } = await ctx.client("sharding").unary("InspectShards", {
        name,
        count: ctx.int("n") ?? 0,
        offset: ctx.int("offset", { min: 0 }) ?? 0,
        eval_split: ctx.bool("eval"),
      });
      for (const instance of instances) {
        if (ctx.out.json) {
          ctx.out.jsonLine(instance);
          continue;
        }
        // The way create_pretraining_data.py logs an instance.
        ctx.out.line(`INFO:tensorflow:*** Example ${instance.index} ***`);
        ctx.out.line(`INFO:tensorflow:tokens: ${instance.tokens.join(" ")}`);
        ctx.out.line(`INFO:tensorflow:segment_ids: ${instance.segment_ids.join(" ")}`);
        ctx.out.line(`INFO:tensorflow:is_random_next: ${instance.is_random_next}`);
        ctx.out.line(`INFO:tensorflow:masked_lm_positions: ${instance.masked_positions.join(" ")}`);
        ctx.out.line(`INFO:tensorflow:masked_lm_labels: ${instance.masked_tokens.join(" ")}`);
        ctx.out.line("");
      }
    },
  },
  {
    name: "train pretrain",
    usage:
      "train pretrain --shards SHARDS --arch bert-mini|bert-small|bert-base|CONFIG.json (--steps N | --budget 30m|2h|SECONDS)\n" +
      "               --name MODEL [--batch B] [--objective mlm-nsp|mlm] [--mask-rate R] [--init MODEL[@VERSION]] [--lr LR]\n" +
      "               [--warmup N | --warmup-fraction F] [--seed S] [--grad-accum K] [--checkpoint-every N] [--eval-every N]\n" +
      "               [--dropout P] [--short-shards SHARDS [--short-fraction F]] [--dynamic-masking] [--detach]",
    strings: [
      "shards",
      "arch",
      "steps",
      "batch",
      "name",
      "lr",
      "warmup",
      "seed",
      "grad-accum",
      "checkpoint-every",
      "eval-every",
      "init",
      "backend",
      "request-id",
      "budget",
      "warmup-fraction",
      "objective",
      "mask-rate",
      "dropout",
      "short-shards",
      "short-fraction",
    ],
    booleans: ["detach", "dynamic-masking"],
    service: "trainer",
    async run(ctx) {
      const arch = ctx.required("arch");
      const budgetText = ctx.string("budget");
      let budgetSeconds = 0;
      if (budgetText !== undefined) {
        try {
          budgetSeconds = parseDuration(budgetText);
        } catch (error) {
          throw new UsageError(`--budget: ${(error as Error).message}`);
        }
      }
      const steps = ctx.int("steps", COUNT_LIMITS.steps);
      if (steps === undefined && !budgetSeconds) throw new UsageError("--steps or --budget is required");
      const batch = ctx.int("batch", COUNT_LIMITS.batchSize);
      const objective = ctx.string("objective");
      if (objective !== undefined && !(PRETRAIN_OBJECTIVES as readonly string[]).includes(objective)) {
        throw new UsageError(`--objective must be ${PRETRAIN_OBJECTIVES.join(" or ")}: got "${objective}"`);
      }
      const maskRate = ctx.number("mask-rate", { min: 0.05, max: 0.8 });
      const warmupFraction = ctx.number("warmup-fraction", RATE_LIMITS.warmupFraction);
      const dropout = ctx.number("dropout", { min: 0, max: 1, open: "max" });
      const shortFraction = ctx.number("short-fraction", { min: 0, max: 1, open: "both" });
      const lr = ctx.number("lr", RATE_LIMITS.learningRate);
      const name = ctx.required("name");
      const shards = ctx.required("shards");
      let architecture: Message;
      if (arch.endsWith(".json")) {
        try {
          architecture = { config_json: await Deno.readTextFile(arch) };
        } catch (error) {
          throw new UsageError(`--arch ${arch} cannot be read: ${(error as Error).message}`);
        }
      } else if (["bert-mini", "bert-small", "bert-base"].includes(arch)) architecture = { arch };
      else {throw new UsageError(
          `--arch must be bert-mini, bert-small, bert-base or a CONFIG.json: got "${arch}"`,
        );}
      const warmup = ctx.int("warmup", { ...COUNT_LIMITS.steps, min: 0 });
      const seed = ctx.int("seed", COUNT_LIMITS.seed);
      const gradAccum = ctx.int("grad-accum", COUNT_LIMITS.gradAccum);
      const checkpointEvery = ctx.int("checkpoint-every", COUNT_LIMITS.interval);
      const evalEvery = ctx.int("eval-every", COUNT_LIMITS.interval);
      // Continue from a model's weights: a second phase at a longer sequence length, or more steps.
      const init = ctx.string("init");
      const initModel = init === undefined ? undefined : modelRef(init, "--init");
      const { job } = await ctx.client("trainer").unary("SubmitJob", {
        name,
        pretrain: {
          shards,
          ...architecture,
          ...(initModel ? { init_model: initModel } : {}),
          steps: steps ?? 0,
          batch_size: batch ?? 0,
          budget_seconds: budgetSeconds,
          ...(objective ? { objective } : {}),
          ...(maskRate === undefined ? {} : { mask_rate: maskRate }),
          ...(warmupFraction === undefined ? {} : { warmup_fraction: warmupFraction }),
          ...(dropout === undefined ? {} : { dropout }),
          ...(ctx.string("short-shards") ? { short_shards: ctx.string("short-shards") } : {}),
          ...(shortFraction === undefined ? {} : { short_fraction: shortFraction }),
          learning_rate: lr ?? 0,
          grad_accum: gradAccum ?? 0,
          checkpoint_every: checkpointEvery ?? 0,
          eval_every: evalEvery ?? 0,
          dynamic_masking: ctx.bool("dynamic-masking"),
          ...(warmup === undefined ? {} : { warmup_steps: warmup }),
          ...(seed === undefined ? {} : { seed }),
        },
        request_id: ctx.string("request-id") ?? crypto.randomUUID(),
        backend: ctx.string("backend") ?? "",
      });
      return await followJob(ctx, "trainer", job);
    },
  },
  {
    name: "train finetune",
    usage:
      "train finetune --base MODEL --task classify|multilabel|pair|ner [--crf] --train PATH|DATASET [--eval PATH|DATASET]\n" +
      "               --name MODEL [--epochs E] [--batch B] [--lr LR] [--max-length N] [--pooling cls|mean] [--seed S]\n" +
      "               [--patience K] [--reinit-layers K] [--windows] [--detach]\n" +
      "               (settings left out fit the base model's size; the job's first event says what it chose)",
    strings: [
      "base",
      "task",
      "train",
      "eval",
      "epochs",
      "name",
      "batch",
      "lr",
      "max-length",
      "seed",
      "patience",
      "reinit-layers",
      "pooling",
      "backend",
    ],
    booleans: ["crf", "windows", "detach"],
    service: "trainer",
    async run(ctx) {
      const task = parseTask(ctx);
      if (ctx.bool("crf") && task !== "TASK_TYPE_NER") throw new UsageError("--crf goes with --task ner");
      if (ctx.bool("windows") && task !== "TASK_TYPE_CLASSIFY" && task !== "TASK_TYPE_MULTILABEL") {
        throw new UsageError(
          "--windows goes with --task classify or multilabel (ner always windows long sentences)",
        );
      }
      const pooling = ctx.string("pooling") ?? "";
      if (pooling && pooling !== "cls" && pooling !== "mean") {
        throw new UsageError(`--pooling must be cls or mean: got '${pooling}'`);
      }
      if (pooling === "mean" && task === "TASK_TYPE_NER") {
        throw new UsageError(
          "--pooling goes with --task classify, multilabel or pair (ner tags every token)",
        );
      }
      const epochs = ctx.int("epochs", COUNT_LIMITS.epochs) ?? 0;
      const batch = ctx.int("batch", COUNT_LIMITS.batchSize) ?? 0;
      const lr = ctx.number("lr", RATE_LIMITS.learningRate) ?? 0;
      const maxLength = ctx.int("max-length", COUNT_LIMITS.maxLength) ?? 0;
      const patience = ctx.int("patience", { ...COUNT_LIMITS.patience, min: 0 }) ?? 0;
      const reinitLayers = ctx.int("reinit-layers", { min: 0 }) ?? 0;
      const name = ctx.required("name");
      const base = modelRef(ctx.required("base"), "--base");
      const trainArg = ctx.required("train");
      const evalArg = ctx.string("eval");
      const train = await resolveDataset(ctx, trainArg, `${name}-train`);
      const evalSet = evalArg ? await resolveDataset(ctx, evalArg, `${name}-eval`) : "";
      const seed = ctx.int("seed", COUNT_LIMITS.seed);
      const { job } = await ctx.client("trainer").unary("SubmitJob", {
        name,
        finetune: {
          base,
          task,
          crf: ctx.bool("crf"),
          train_dataset: train,
          eval_dataset: evalSet,
          epochs,
          batch_size: batch,
          learning_rate: lr,
          max_length: maxLength,
          early_stopping_patience: patience,
          reinit_layers: reinitLayers,
          long_text_windows: ctx.bool("windows"),
          pooling,
          ...(seed === undefined ? {} : { seed }),
        },
        request_id: crypto.randomUUID(),
        backend: ctx.string("backend") ?? "",
      });
      return await followJob(ctx, "trainer", job);
    },
  },
  {
    name: "jobs list",
    usage:
      "jobs list [--service tokenizer|sharding|trainer] [--state running|queued|succeeded|failed|cancelled]",
    strings: ["service", "state"],
    service: "several",
    async run(ctx) {
      const only = ctx.string("service");
      if (only && !JOB_SERVICES.includes(only as ServiceKey)) {
        throw new UsageError(`--service must be one of ${JOB_SERVICES.join(", ")}: got "${only}"`);
      }
      const state = ctx.string("state");
      const filter = state ? { states: [`JOB_STATE_${state.toUpperCase()}`] } : {};
      const jobs: Message[] = [];
      let answered = 0;
      for (const key of only ? [only as ServiceKey] : JOB_SERVICES) {
        try {
          const response = await ctx.client(key).unary("ListJobs", { page: { page_size: 1000 }, filter });
          jobs.push(...response.jobs);
          answered++;
        } catch (error) {
          const code = (error as BertforgeError).code;
          if (code !== "UNIMPLEMENTED" && code !== "UNAVAILABLE") throw error;
          if (!ctx.out.json) {
            ctx.out.note(
              `(${key}: ${code === "UNIMPLEMENTED" ? "jobs are not available yet" : "not reachable"})`,
            );
          }
        }
      }
      if (answered === 0) throw notAvailable("jobs list");
      jobs.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
      if (ctx.out.json) return jobs.forEach((job) => ctx.out.jsonLine(job));
      ctx.out.line(table(["ID", "KIND", "NAME", "STATE", "PROGRESS", "LOSS", "CREATED"], jobs.map(jobRow)));
    },
  },
  {
    name: "jobs watch",
    usage: "jobs watch ID",
    service: "several",
    async run(ctx) {
      const id = ctx.positional[0];
      if (!id) throw new UsageError("give the job id");
      const { service, job } = await findJob(ctx, id);
      return await followJob(ctx, service, job);
    },
  },
  {
    name: "jobs get",
    usage: "jobs get ID",
    service: "several",
    async run(ctx) {
      const id = ctx.positional[0];
      if (!id) throw new UsageError("give the job id");
      const { job } = await findJob(ctx, id);
      if (ctx.out.json) ctx.out.jsonLine(job);
      else ctx.out.line(JSON.stringify(job, null, 2));
    },
  },
  {
    name: "jobs cancel",
    usage: "jobs cancel ID",
    service: "several",
    async run(ctx) {
      const id = ctx.positional[0];
      if (!id) throw new UsageError("give the job id");
      const { service } = await findJob(ctx, id);
      const { job } = await ctx.client(service).unary("CancelJob", { job_id: id });
      if (ctx.out.json) ctx.out.jsonLine(job);
      else ctx.out.line(`${id}: ${String(job.state).replace("JOB_STATE_", "").toLowerCase()}`);
    },
  },
  {
    name: "eval",
    usage:
      "eval --model MODEL[@VERSION] --task classify|multilabel|pair|ner --data PATH|DATASET [--max-length N]\n" +
      "        [--errors FILE.jsonl [--max-errors N]]",
    strings: ["model", "task", "data", "max-length", "batch", "threshold", "errors", "max-errors"],
    service: "trainer",
    async run(ctx) {
      const task = parseTask(ctx);
      const { name, version } = modelRef(ctx.required("model"), "--model");
      const errorsPath = ctx.string("errors");
      const maxErrors = ctx.int("max-errors", { ...COUNT_LIMITS.maxErrors, min: 1 });
      const maxLength = ctx.int("max-length", COUNT_LIMITS.maxLength);
      const batch = ctx.int("batch", COUNT_LIMITS.batchSize);
      if (maxErrors !== undefined && errorsPath === undefined) {
        throw new UsageError("--max-errors needs --errors FILE (where the mistakes are written)");
      }
      const dataArg = ctx.required("data");
      const dataset = await resolveDataset(ctx, dataArg, `${name}-eval-${artifactNameFromPath(dataArg)}`);
      const threshold = ctx.number("threshold", { min: 0, max: 1, open: "both" });
      const response = await ctx.client("trainer").unary("Evaluate", {
        model: { name, version },
        task,
        dataset,
        max_length: maxLength ?? 0,
        batch_size: batch ?? 0,
        ...(threshold === undefined ? {} : { threshold }),
        max_errors: errorsPath === undefined ? 0 : maxErrors ?? 1000,
      }, { deadlineMs: 0 });
      if (errorsPath !== undefined) {
        const lines = (response.errors as Message[]).map(mistakeLine);
        // Written aside and renamed, so the file is either the whole list or the one that was there before.
        const partial = `${errorsPath}.partial-${Deno.pid}`;
        await Deno.writeTextFile(partial, lines.join(""));
        await Deno.rename(partial, errorsPath);
        ctx.out.note(
          `${lines.length} of ${response.error_count} mistakes written to ${errorsPath}` +
            (task === "TASK_TYPE_CLASSIFY" || task === "TASK_TYPE_PAIR" ? " (most confident first)" : ""),
        );
      }
      // One JSON object of metrics, whatever the output mode: scripts read it.
      ctx.out.jsonLine({
        model: response.model,
        task: response.task,
        examples: Number(response.examples),
        errors: Number(response.error_count),
        ...response.metrics,
      });
    },
  },
  {
    name: "eval-suite",
    usage: "eval-suite --model MODEL[@VERSION] [--tasks a,b] [--out DIR] [--data-dir DIR] [--max-train N]\n" +
      `        tasks: ${SUITE_TASKS.map((t) => t.name).join(", ")}; --out defaults to report/suite/<model>`,
    strings: ["model", "tasks", "out", "data-dir", "max-train"],
    service: "trainer",
    async run(ctx) {
      const ref = ctx.required("model");
      const model = modelRef(ref, "--model");
      let tasks;
      try {
        tasks = selectTasks(ctx.string("tasks"));
      } catch (error) {
        if (error instanceof InvalidArgument) throw new UsageError(error.message);
        throw error;
      }
      const out = ctx.string("out") ?? join("report", "suite", ref.replace(/[^A-Za-z0-9._-]+/g, "-"));
      const rows = await runSuite({
        model,
        tasks,
        dataDir: ctx.string("data-dir") ?? DEFAULT_DATA_DIR,
        outDir: out,
        ...(ctx.int("max-train") !== undefined ? { maxTrain: ctx.int("max-train")! } : {}),
        trainer: ctx.client("trainer"),
        out: ctx.out,
      });
      if (ctx.out.json) rows.forEach((row) => ctx.out.jsonLine(row));
      else ctx.out.line(suiteTable(rows));
      ctx.out.note(`wrote ${join(out, "suite.jsonl")} and ${join(out, "index.html")}`);
      return rows.some((row) => row.status === "failed") ? 1 : 0;
    },
  },
  {
    name: "predict",
    usage: "predict --model MODEL[@VERSION] (--text T [--pair T2] | --file F) [--top-k K]\n" +
      '        [--zero-shot --labels A,B --template "...[MASK]..." [--label-words W1,W2] [--calibrate]]',
    strings: ["model", "text", "pair", "file", "top-k", "labels", "template", "label-words"],
    booleans: ["zero-shot", "tags", "calibrate"],
    service: "inference",
    async run(ctx) {
      const { name: model, version } = modelRef(ctx.required("model"), "--model");
      const texts = await readInputs(ctx);
      const inference = ctx.client("inference");
      const emit = (text: string, result: Message, human: string) => {
        if (ctx.out.json) ctx.out.jsonLine({ text, ...result });
        else ctx.out.line(`${human}\t${text}`);
      };
      if (ctx.bool("zero-shot")) {
        const labels = (ctx.required("labels")).split(",").map((s) => s.trim()).filter(Boolean);
        if (labels.length < 2) throw new UsageError("--labels needs at least two labels, comma-separated");
        const template = ctx.required("template");
        if (!template.includes("[MASK]")) throw new UsageError("--template must contain [MASK]");
        const labelWords = ctx.string("label-words")?.split(",").map((s) => s.trim()) ?? [];
        for (const batch of chunked(texts, 64)) {
          const { model: served, results } = await inference.unary("ZeroShotBatch", {
            model,
            version,
            texts: batch,
            options: { template, labels, label_words: labelWords, calibrate: ctx.bool("calibrate") },
          });
          batch.forEach((text, i) => {
            const r = results[i];
            emit(text, {
              model: served,
              label: r.label,
              scores: Object.fromEntries(r.scores.map((s: Message) => [s.label, s.score])),
            }, `${r.label} (${Math.max(...r.scores.map((s: Message) => s.score)).toFixed(3)})`);
          });
        }
        return;
      }
      const { model: info } = await inference.unary("ModelInfo", { model: { name: model, version } });
      const task = String(info?.summary?.task ?? "");
      const pair = ctx.string("pair");
      for (const batch of chunked(texts, 64)) {
        if (task === "TASK_TYPE_CLASSIFY" || task === "TASK_TYPE_MULTILABEL" || task === "TASK_TYPE_PAIR") {
          const response = task === "TASK_TYPE_PAIR"
            ? await inference.unary("ClassifyPairBatch", {
              model,
              version,
              pairs: batch.map((line) => {
                const [a, b] = pair !== undefined ? [line, pair] : line.split("\t");
                if (b === undefined) {
                  throw new UsageError("a pair model needs --pair T2 or tab-separated lines");
                }
                return { text: a, text_pair: b };
              }),
            })
            : await inference.unary("ClassifyBatch", { model, version, texts: batch });
          batch.forEach((text, i) => {
            const r = response.results[i];
            const scores = Object.fromEntries(r.scores.map((s: Message) => [s.label, s.score]));
            emit(
              text,
              { model: response.model, label: r.label, labels: r.labels, scores, logits: r.logits },
              `${task === "TASK_TYPE_MULTILABEL" ? r.labels.join("|") || "-" : r.label} (${
                Math.max(0, ...r.scores.map((s: Message) => s.score)).toFixed(3)
              })`,
            );
          });
        } else if (task === "TASK_TYPE_NER") {
          const response = await inference.unary("TagBatch", {
            model,
            version,
            texts: batch,
            options: { return_tags: ctx.bool("tags") },
          });
          batch.forEach((text, i) => {
            const r = response.results[i];
            emit(
              text,
              { model: response.model, entities: r.entities, ...(ctx.bool("tags") ? { tags: r.tags } : {}) },
              r.entities.map((e: Message) => `${e.text}/${e.type}`).join(" ") || "-",
            );
          });
        } else if (task === "TASK_TYPE_PRETRAIN") {
          const response = await inference.unary("FillMaskBatch", {
            model,
            version,
            texts: batch,
            options: { top_k: ctx.int("top-k") ?? 0 },
          });
          batch.forEach((text, i) => {
            const r = response.results[i];
            emit(
              text,
              { model: response.model, predictions: r.predictions, sequence: r.sequence },
              r.predictions.map((p: Message) => p.candidates.map((c: Message) => c.token).join("/")).join(
                " ",
              ),
            );
          });
        } else {
          throw new BertforgeError(
            "FAILED_PRECONDITION",
            `model ${model} has no head predict knows (task "${task}")`,
          );
        }
      }
    },
  },
  {
    name: "models list",
    usage: "models list [--name MODEL] [--loaded]",
    strings: ["name"],
    booleans: ["loaded"],
    service: "trainer",
    async run(ctx) {
      if (ctx.bool("loaded")) {
        const { models } = await ctx.client("inference").unary("ListModels", { loaded_only: true });
        if (ctx.out.json) return models.forEach((m: Message) => ctx.out.jsonLine(m));
        ctx.out.line(table(
          ["NAME", "VERSION", "TASK", "STATE", "BACKEND", "DEFAULT"],
          models.map((m: Message) => [
            m.summary?.model?.name,
            m.summary?.model?.version,
            taskName(m.summary?.task),
            String(m.state).replace("MODEL_STATE_", "").toLowerCase(),
            m.backend,
            m.is_default ? "*" : "",
          ]),
        ));
        return;
      }
      const { models } = await ctx.client("trainer").unary("ListModels", {
        page: { page_size: 1000 },
        name: ctx.string("name") ?? "",
      });
      if (ctx.out.json) return models.forEach((m: Message) => ctx.out.jsonLine(m));
      ctx.out.line(table(
        ["NAME", "VERSION", "TASK", "LABELS", "LAYERS", "HIDDEN", "VOCAB", "SOURCE", "SIZE", "CREATED"],
        models.map((m: Message) => [
          m.model?.name,
          m.model?.version,
          taskName(m.task),
          m.labels.length,
          m.num_layers,
          m.hidden_size,
          m.vocab_size,
          m.source,
          formatBytes(Number(m.size_bytes)),
          m.created_at,
        ]),
      ));
    },
  },
  {
    name: "models import-hf",
    usage: "models import-hf DIR --name MODEL",
    strings: ["name"],
    service: "trainer",
    async run(ctx) {
      const dir = ctx.positional[0];
      if (!dir) throw new UsageError("give the folder of the Hugging Face checkpoint");
      const info = await Deno.stat(dir).catch(() => undefined);
      if (!info?.isDirectory) throw new UsageError(`${dir} is not a folder`);
      const name = ctx.required("name");
      // The server reads the folder's top-level files by name: check them here, before a byte is sent, so a
      // wrong folder (`/etc`) is refused at once instead of after uploading everything readable in it.
      const sources = (await localUploadSources(dir)).filter((s) => !s.path.includes("/"));
      const names = new Set(sources.map((s) => s.path));
      const missing = ["config.json", "vocab.txt", "model.safetensors"].filter((n) => !names.has(n));
      if (missing.length > 0) {
        throw new UsageError(
          `${dir} is not a Hugging Face BERT folder: ${missing.join(", ")} missing${
            missing.includes("model.safetensors") && names.has("pytorch_model.bin")
              ? " (pytorch_model.bin is not read: save the model with safe_serialization=True)"
              : ""
          }`,
        );
      }
      if (!ctx.out.json) {
        ctx.out.note(`importing ${sources.map((s) => s.path).join(", ")} as model "${name}"`);
      }
      const { model } = await ctx.client("trainer").clientStream(
        "ImportModel",
        uploadRequests({ name }, sources),
      );
      if (ctx.out.json) ctx.out.jsonLine(model);
      else {ctx.out.line(
          `model ${model.model.name}@${model.model.version} (${
            taskName(model.task)
          }, ${model.num_layers} layers)`,
        );}
    },
  },
  {
    name: "models export",
    usage: "models export MODEL[@VERSION] --format hf|onnx --out DIR",
    strings: ["format", "out"],
    service: "trainer",
    async run(ctx) {
      const { name, version } = positionalModel(ctx);
      const format = ctx.required("format");
      if (format !== "hf" && format !== "onnx") {
        throw new UsageError(`--format must be hf or onnx: got "${format}"`);
      }
      const out = ctx.required("out");
      await Deno.mkdir(out, { recursive: true });
      let summary: Message | undefined;
      const written = await saveDownload(
        ctx.client("trainer").serverStream("ExportModel", {
          model: { name, version },
          format: format === "onnx" ? "EXPORT_FORMAT_ONNX" : "EXPORT_FORMAT_HF",
        }),
        out,
        (first) => summary = first.model,
      );
      if (ctx.out.json) ctx.out.jsonLine({ model: summary, out, files: written });
      else ctx.out.line(`wrote ${written.length} file(s) to ${out}: ${written.join(", ")}`);
    },
  },
  {
    name: "models info",
    usage: "models info MODEL[@VERSION]",
    service: "inference",
    async run(ctx) {
      const { name, version } = positionalModel(ctx);
      const info = await ctx.client("inference").unary("ModelInfo", { model: { name, version } });
      if (ctx.out.json) ctx.out.jsonLine(info);
      else ctx.out.line(JSON.stringify(info, null, 2));
    },
  },
  {
    name: "models load",
    usage: "models load MODEL[@VERSION] [--default] [--backend B]",
    strings: ["backend"],
    booleans: ["default"],
    service: "inference",
    async run(ctx) {
      const { name, version } = positionalModel(ctx);
      const response = await ctx.client("inference").unary("Load", {
        model: { name, version },
        backend: ctx.string("backend") ?? "",
        set_default: ctx.bool("default"),
      }, { deadlineMs: 600_000 });
      if (ctx.out.json) ctx.out.jsonLine(response);
      else {
        const m = response.model;
        ctx.out.line(
          `loaded ${m.summary.model.name}@${m.summary.model.version} on ${m.backend} in ${
            Number(response.load_seconds).toFixed(1)
          } s`,
        );
      }
    },
  },
  {
    name: "models unload",
    usage: "models unload MODEL[@VERSION]",
    service: "inference",
    async run(ctx) {
      const { name, version } = positionalModel(ctx);
      const response = await ctx.client("inference").unary("Unload", { model: { name, version } });
      if (ctx.out.json) ctx.out.jsonLine(response);
      else ctx.out.line(`unloaded ${name}`);
    },
  },
  {
    name: "health",
    usage: "health",
    service: "several",
    async run(ctx) {
      let failures = 0;
      const rows: string[][] = [];
      for (const key of ["tokenizer", "sharding", "trainer", "inference"] as ServiceKey[]) {
        const address = ctx.settings.peers[key];
        let status = "SERVING";
        try {
          await waitForServing(address, {
            service: fullServiceName(SERVICE_OF[key]),
            timeoutMs: 1,
            ...(ctx.settings.authToken ? { authToken: ctx.settings.authToken } : {}),
            ...(ctx.settings.tls?.caFile
              ? { tls: { caFile: ctx.settings.tls.caFile } }
              : ctx.bool("tls")
              ? { tls: true as const }
              : {}),
          });
        } catch (error) {
          failures++;
          status = (error as Error).message.split(": ").pop() ?? "unreachable";
        }
        rows.push([key, address, status]);
        if (ctx.out.json) ctx.out.jsonLine({ service: key, address, status });
      }
      if (!ctx.out.json) ctx.out.line(table(["SERVICE", "ADDRESS", "STATUS"], rows));
      return failures > 0 ? 1 : 0;
    },
  },
];

function taskName(task: unknown): string {
  return String(task ?? "").replace("TASK_TYPE_", "").toLowerCase();
}

async function findJob(ctx: Context, id: string): Promise<{ service: ServiceKey; job: Message }> {
  const known = serviceOfJob(id);
  const candidates = known ? [known] : JOB_SERVICES;
  let lastError: unknown;
  for (const service of candidates) {
    try {
      const { job } = await ctx.client(service).unary("GetJob", { job_id: id });
      return { service, job };
    } catch (error) {
      lastError = error;
      const code = (error as BertforgeError).code;
      if (candidates.length > 1 && ["NOT_FOUND", "UNIMPLEMENTED", "UNAVAILABLE"].includes(code)) continue;
      throw error;
    }
  }
  if (candidates.length > 1) throw new BertforgeError("NOT_FOUND", `no service knows a job "${id}"`);
  throw lastError;
}

function notAvailable(command: string): BertforgeError {
  return new BertforgeError("UNIMPLEMENTED", `${command} is not available yet`);
}

const GLOBAL_STRINGS = [
  "port-base",
  "tokenizer-addr",
  "sharding-addr",
  "trainer-addr",
  "inference-addr",
  "inference-http",
  "auth-token",
  "tls-ca",
  "log-level",
];
const GLOBAL_BOOLEANS = ["json", "help", "tls"];

export function usage(): string {
  const lines = [
    "usage: bertctl [--port-base N | --tokenizer-addr H:P ...] [--tls | --tls-ca FILE] [--auth-token T] [--json] <command>",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.usage.replaceAll("\n", "\n  ")}`),
    "",
    "Local paths given for --corpus, --vocab, --train, --eval and --data are uploaded to the store first.",
    "Environment: BERTFORGE_<SERVICE>_ADDR, BERTFORGE_PORT_BASE, BERTFORGE_AUTH_TOKEN, BERTFORGE_TLS_CA.",
  ];
  return lines.join("\n");
}

/** Runs one bertctl invocation; returns the exit code (never exits the process itself). */
export async function run(args: string[], outputOverride?: Output): Promise<number> {
  // Global flags may come before the command words (`bertctl --port-base 51000 jobs list`): move them after.
  const leading: string[] = [];
  while (args.length > 0 && args[0]!.startsWith("--")) {
    const flag = args[0]!;
    const name = flag.slice(2).split("=")[0]!;
    if (GLOBAL_STRINGS.includes(name) && !flag.includes("=") && args.length > 1) {
      leading.push(flag, args[1]!);
      args = args.slice(2);
    } else if (GLOBAL_STRINGS.includes(name) || GLOBAL_BOOLEANS.includes(name)) {
      leading.push(flag);
      args = args.slice(1);
    } else break;
  }
  args = [...args, ...leading];
  const jsonFlag = args.includes("--json");
  args = args.filter((arg) => arg !== "--json");
  const words: string[] = [];
  for (const arg of args) {
    if (arg.startsWith("-")) break;
    words.push(arg);
  }
  const spec = COMMANDS.find((c) => {
    const parts = c.name.split(" ");
    return parts.every((part, i) => words[i] === part);
  });
  const wantsHelp = args.includes("--help") || args.includes("-h");
  const out = outputOverride ?? consoleOutput(jsonFlag);
  if (!spec) {
    if (wantsHelp || args.length === 0) {
      out.line(usage());
      return args.length === 0 ? 2 : 0;
    }
    out.note(`bertctl: unknown command "${words.join(" ") || args[0]}"\n\n${usage()}`);
    return 2;
  }
  if (wantsHelp) {
    out.line(`usage: bertctl ${spec.usage}`);
    return 0;
  }
  const rest = args.slice(spec.name.split(" ").length);
  const unknown: string[] = [];
  const strings = [...GLOBAL_STRINGS, ...(spec.strings ?? [])];
  const booleans = [...GLOBAL_BOOLEANS, ...(spec.booleans ?? [])];
  const flags = parseArgs(rest, {
    string: strings,
    boolean: booleans,
    collect: spec.collects ?? [],
    unknown: (arg: string, key?: string) => {
      if (key !== undefined) unknown.push(arg);
      return true;
    },
  });
  let ctx: Context | undefined;
  try {
    if (unknown.length > 0) throw new UsageError(`unknown flag ${unknown[0]}`);
    for (const name of strings) {
      const value = flags[name] as unknown;
      if (value === "" || (Array.isArray(value) && value.includes(""))) {
        throw new UsageError(`--${name} needs a value`);
      }
    }
    const settingsArgs = GLOBAL_STRINGS.flatMap((name) =>
      typeof flags[name] === "string" ? [`--${name}`, flags[name]] : []
    );
    let settings: Settings;
    try {
      settings = loadSettings(undefined, { args: settingsArgs });
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    ctx = new Context(spec.name, flags, flags._.map(String), settings, out);
    const context = ctx;
    // One root span per command, so its uploads, the call that starts a job and the watch share one trace.
    const code = await withSpan(
      `bertctl ${spec.name}`,
      { "bertforge.command": spec.name },
      () => spec.run(context),
    );
    return typeof code === "number" ? code : 0;
  } catch (error) {
    if (error instanceof UsageError) {
      out.note(`bertctl ${spec.name}: ${error.message}\nusage: bertctl ${spec.usage}`);
      return 2;
    }
    const code = (error as BertforgeError).code;
    const message = (error as Error).message;
    if (code === "UNIMPLEMENTED") {
      out.note(
        `bertctl ${spec.name}: ${spec.name} is not available yet (the ${spec.service} service does not implement it)`,
      );
    } else if (code === "UNAVAILABLE") {
      const where = spec.service === "several"
        ? "the fleet"
        : `the ${spec.service} service at ${ctx?.settings.peers[spec.service]}`;
      out.note(
        `bertctl ${spec.name}: cannot reach ${where}: ${message}\n` +
          "is the fleet running? start it with `deno task fleet` (and pass the same --port-base here)",
      );
    } else if (error instanceof BertforgeError) {
      out.note(`bertctl ${spec.name}: ${code}: ${message}`);
    } else {
      out.note(`bertctl ${spec.name}: ${(error as Error)?.stack ?? String(error)}`);
    }
    return 1;
  } finally {
    ctx?.close();
  }
}

if (import.meta.main) {
  const telemetry = setupTelemetry({ serviceName: "bertctl" });
  const code = await run(Deno.args);
  await telemetry.shutdown();
  Deno.exit(code);
}

/**
 * ShardingService handlers (protos/bertforge/v1/sharding.proto): thin translations between proto messages
 * and the builder (build.ts) and the shard reader (services/shared/shards). Builds run as jobs on the
 * shared JobManager, one at a time (a build already uses every core through its workers); a build a
 * crashed process left RUNNING starts over on recovery, since a rebuild of an unpublished set is cheap
 * and leaves nothing of the interrupted one behind.
 *
 * @module
 */
import type { Logger } from "../shared/config/log.ts";
import { AlreadyExists, InvalidArgument, NotFound } from "../shared/errors.ts";
import { type JobEvent, JobManager, type JobRecord } from "../shared/jobs/jobs.ts";
import { jobEventMessage, jobMessage } from "../shared/jobs/proto.ts";
import { jobHandlers } from "../shared/jobs/handlers.ts";
import type { Handlers, Message } from "../shared/rpc/serve.ts";
import { pageOf } from "../shared/rpc/paging.ts";
import { type PretrainInstance, ShardSet } from "../shared/shards/mod.ts";
import {
  listShardSets,
  readManifest,
  type ShardManifest,
  shardSetPrefix,
} from "../shared/shards/manifest.ts";
import { isPublished } from "../shared/store/publish.ts";
import { validateName } from "../shared/store/names.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import {
  buildPretrainingShards,
  checkWeight,
  corpusFromStore,
  resolveSettings,
  type WeightedSource,
} from "./build.ts";
import type { PretrainingSettings, SourceReport } from "../shared/shards/manifest.ts";

export const JOB_KIND = "build_pretraining";

/** What StartBuildPretraining asked for, settings resolved; stored as the job's spec. */
export interface BuildSpec {
  name: string;
  /** The corpus, or the source names joined by `+` for a multi-source build. */
  corpus: string;
  /** Several corpora with their weights (absent in single-corpus builds and in older specs). */
  sources?: { corpus: string; weight: number }[];
  vocab: string;
  overwrite: boolean;
  settings: PretrainingSettings;
}

export interface BuildResult {
  name: string;
  instances: number;
  evalInstances: number;
  shards: number;
  sizeBytes: number;
  /** What each source gave (the manifest's `sources`). */
  sources?: SourceReport[];
}

export interface SharderOptions {
  store: ObjectStore;
  log?: Logger;
  /** Worker threads per build. @default all cores (at most 4) */
  workers?: number;
  /** The code version recorded in lineage. */
  codeVersion?: string;
}

const num = (value: unknown): number => (typeof value === "string" ? Number(value) : (value as number) ?? 0);

/** Whether an optional proto field was set (proto3 `optional` arrives as a oneof `_<field>`). */
function isSet(request: Message, field: string): boolean {
  if (`_${field}` in request) return request[`_${field}`] === field;
  return request[field] !== undefined && request[field] !== null;
}

/** StartBuildPretrainingRequest → the job spec: defaults of the proto applied, every range checked. */
export function specFromRequest(request: Message): BuildSpec {
  const name = validateName(request.name, "name");
  const requested: Message[] = Array.isArray(request.sources) ? request.sources : [];
  if (requested.length > 0 && typeof request.corpus === "string" && request.corpus !== "") {
    throw new InvalidArgument("corpus and sources are both set: give one of them");
  }
  const sources = requested.map((source, i) => ({
    corpus: validateName(source?.corpus, `sources[${i}].corpus`),
    weight: checkWeight(isSet(source ?? {}, "weight") ? num(source.weight) : 1, `sources[${i}].weight`),
  }));
  const names = sources.map((source) => source.corpus);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) {
    throw new InvalidArgument(`sources: corpus '${twice}' is given twice (weight it instead)`);
  }
  if (sources.length > 0 && sources.every((source) => source.weight === 0)) {
    throw new InvalidArgument("sources: every weight is 0, so nothing would be built");
  }
  const corpus = sources.length > 0 ? names.join("+") : validateName(request.corpus, "corpus");
  const vocab = validateName(request.vocab, "vocab");
  const maxSeqLength = num(request.max_seq_length) || 128;
  const maskedLmProb = isSet(request, "masked_lm_prob") ? num(request.masked_lm_prob) : 0.15;
  if (!(maskedLmProb > 0 && maskedLmProb < 1)) {
    throw new InvalidArgument(`masked_lm_prob must be in (0, 1): got ${maskedLmProb}`);
  }
  const partial: Partial<PretrainingSettings> = {
    maxSeqLength,
    maskedLmProb,
    maxPredictionsPerSeq: num(request.max_predictions_per_seq) ||
      Math.max(1, Math.round(maxSeqLength * maskedLmProb)),
    dupeFactor: num(request.dupe_factor) || 10,
    shortSeqProb: isSet(request, "short_seq_prob") ? num(request.short_seq_prob) : 0.1,
    seed: isSet(request, "seed") ? num(request.seed) : 12345,
    wholeWordMask: !!request.whole_word_masking,
    evalFraction: isSet(request, "eval_fraction") ? num(request.eval_fraction) : 0.01,
    packed: !!request.packed,
  };
  if (num(request.shard_size_bytes) > 0) partial.maxShardBytes = num(request.shard_size_bytes);
  // Same checks as the builder, so a bad setting fails the call rather than the job.
  const settings = resolveSettings(partial);
  return {
    name,
    corpus,
    ...(sources.length > 0 ? { sources } : {}),
    vocab,
    overwrite: !!request.overwrite,
    settings,
  };
}

/** The spec's corpora, resolved in the store (NOT_FOUND / FAILED_PRECONDITION naming the corpus). */
async function sourcesFromStore(store: ObjectStore, spec: BuildSpec): Promise<WeightedSource[]> {
  const wanted = spec.sources ?? [{ corpus: spec.corpus, weight: 1 }];
  const out: WeightedSource[] = [];
  for (const { corpus, weight } of wanted) out.push({ corpus: await corpusFromStore(store, corpus), weight });
  return out;
}

/** The build's vocab: `vocabs/<name>/vocab.txt`, lower-casing from its tokenizer_config.json when present. */
async function loadVocab(store: ObjectStore, name: string): Promise<{ text: string; lowercase: boolean }> {
  const key = `vocabs/${name}/vocab.txt`;
  if (!(await isPublished(store, `vocabs/${name}`)) || !(await store.exists(key))) {
    throw new NotFound(`vocab '${name}' not found (no published vocabs/${name}/ with a vocab.txt)`);
  }
  const text = await store.getText(key);
  let lowercase = true;
  const configKey = `vocabs/${name}/tokenizer_config.json`;
  if (await store.exists(configKey)) {
    const config = await store.getJson<{ do_lower_case?: boolean }>(configKey);
    if (typeof config.do_lower_case === "boolean") lowercase = config.do_lower_case;
  }
  return { text, lowercase };
}

export class Sharder {
  readonly store: ObjectStore;
  readonly manager: JobManager;
  readonly #options: SharderOptions;

  constructor(options: SharderOptions) {
    this.#options = options;
    this.store = options.store;
    this.manager = new JobManager(options.store, { concurrency: 1 });
    this.manager.register<BuildSpec, BuildResult>(JOB_KIND, {
      validate: (spec) => spec as BuildSpec,
      onInterrupted: "resume",
      run: async (ctx) => {
        const spec = ctx.spec;
        const vocab = await loadVocab(this.store, spec.vocab);
        const sources = await sourcesFromStore(this.store, spec);
        const fileCount = sources.reduce((sum, source) => sum + source.corpus.files.length, 0);
        await ctx.emit({
          type: "log",
          message: `building shards '${spec.name}' from ${spec.corpus} (${fileCount} files) with vocab ` +
            `'${spec.vocab}', seq ${spec.settings.maxSeqLength}, dupe ${spec.settings.dupeFactor}` +
            (spec.settings.wholeWordMask ? ", whole-word masking" : "") +
            (spec.settings.packed ? ", packed rows (no NSP)" : ""),
        });
        const manifest = await buildPretrainingShards({
          store: this.store,
          name: spec.name,
          ...(spec.sources ? { sources } : { corpus: sources[0]!.corpus }),
          vocab: { text: vocab.text, name: spec.vocab, lowercase: vocab.lowercase },
          settings: spec.settings,
          // A resumed job rebuilds over what its interrupted run left (never published).
          overwrite: spec.overwrite,
          signal: ctx.signal,
          jobId: ctx.jobId,
          ...(this.#options.workers !== undefined ? { workers: this.#options.workers } : {}),
          ...(this.#options.codeVersion ? { builderVersion: this.#options.codeVersion } : {}),
          onProgress: (p) => {
            ctx.progress(p.bytesRead, p.totalBytes, `${p.instances} instances in ${p.shards} shards`).catch(
              () => {},
            );
          },
        });
        await ctx.emit({
          type: "artifact",
          message: `published shards '${spec.name}': ${manifest.instances} instances ` +
            `(+${manifest.evalInstances} held out) in ${
              manifest.shards.length + manifest.evalShards.length
            } shards`,
          data: { name: spec.name },
        });
        // One event per source, its numbers as metrics, so a watcher sees the mix that was used.
        for (const source of manifest.sources ?? []) {
          await ctx.emit({
            type: "log",
            message: `source ${source.name} (weight ${source.weight}): ${source.documents} documents, ` +
              `${source.characters} characters, ${source.instances} instances, ${source.tokens} tokens`,
            data: {
              source: source.name,
              metrics: {
                weight: source.weight,
                bytes: source.bytes,
                documents: source.documents,
                characters: source.characters,
                documents_used: source.documentsUsed,
                instances: source.instances,
                tokens: source.tokens,
                eval_instances: source.evalInstances,
              },
            },
          });
        }
        return {
          name: spec.name,
          instances: manifest.instances,
          evalInstances: manifest.evalInstances,
          shards: manifest.shards.length + manifest.evalShards.length,
          sizeBytes: manifest.bytes,
          sources: manifest.sources ?? [],
        };
      },
    });
  }

  /** Takes over builds a dead process left queued or running. */
  recover() {
    return this.manager.recover();
  }

  async close(): Promise<void> {
    await this.manager.close();
  }

  /** Checks the inputs exist and the name is free, then queues the build. */
  async start(request: Message): Promise<JobRecord> {
    const spec = specFromRequest(request);
    if (!spec.overwrite && await isPublished(this.store, shardSetPrefix(spec.name))) {
      throw new AlreadyExists(`shard set '${spec.name}' already exists; pass overwrite to rebuild it`);
    }
    await loadVocab(this.store, spec.vocab);
    await sourcesFromStore(this.store, spec);
    return await this.manager.get(await this.manager.submit(JOB_KIND, spec));
  }

  async jobMessage(record: JobRecord): Promise<Message> {
    const spec = await this.manager.getSpec<BuildSpec>(record.id).catch(() => null);
    const result = record.result as BuildResult | undefined;
    return {
      ...jobMessage(record, spec, { unit: "bytes" }),
      outputs: result
        ? [{
          kind: "ARTIFACT_KIND_SHARDS",
          name: result.name,
          prefix: `${shardSetPrefix(result.name)}/`,
          size_bytes: String(result.sizeBytes),
        }]
        : [],
    };
  }

  handlers(): Handlers {
    return {
      StartBuildPretraining: async (request: Message) => ({
        job: await this.jobMessage(await this.start(request)),
      }),
      ...jobHandlers({
        manager: this.manager,
        jobMessage: (record) => this.jobMessage(record),
        eventMessage: protoEvent,
        listKind: () => JOB_KIND, // builds only, whatever filter.kind says
      }),
      ListShards: async (request: Message) => {
        // Newest first, as List calls order by default.
        const sets = (await listShardSets(this.store)).sort((a, b) =>
          (b.createdAt ?? "").localeCompare(a.createdAt ?? "")
        );
        const { items, page } = pageOf(sets, request.page);
        return { shard_sets: items.map(shardSetMessage), page };
      },
      GetShards: async (request: Message) => {
        const manifest = await readManifest(this.store, validateName(request.name, "name"));
        return { shard_set: shardSetMessage(manifest), manifest_json: JSON.stringify(manifest, null, 2) };
      },
      InspectShards: async (request: Message) => ({
        instances: await this.inspect(
          validateName(request.name, "name"),
          num(request.count) || 5,
          num(request.offset),
          !!request.eval_split,
        ),
      }),
    };
  }

  /** `count` instances from `offset` in stored order, decoded as create_pretraining_data.py logs them. */
  async inspect(name: string, count: number, offset: number, evalSplit: boolean): Promise<Message[]> {
    if (!Number.isInteger(count) || count < 1 || count > 100) {
      throw new InvalidArgument(`count must be in 1..100: got ${count}`);
    }
    const set = await ShardSet.open(this.store, name);
    const split = evalSplit ? "eval" : "train";
    const total = set.instanceCount(split);
    if (!Number.isInteger(offset) || offset < 0 || (offset >= total && total > 0)) {
      throw new InvalidArgument(`offset must be in 0..${Math.max(0, total - 1)}: got ${offset}`);
    }
    const vocab = (await this.store.getText(`${shardSetPrefix(name)}/vocab.txt`)).split("\n").map((t) =>
      t.trim()
    );
    const token = (id: number) => vocab[id] ?? `[${id}]`;
    const out: Message[] = [];
    let first = 0;
    const shards = set.shardsOf(split);
    for (let s = 0; s < shards.length && out.length < count; s++) {
      const end = first + shards[s]!.instances;
      if (offset < end) {
        const view = await set.loadShard(s, { split });
        for (let i = Math.max(0, offset - first); i < view.count && out.length < count; i++) {
          out.push(instanceMessage(first + i, view.get(i), token));
        }
      }
      first = end;
    }
    return out;
  }
}

function instanceMessage(index: number, x: PretrainInstance, token: (id: number) => string): Message {
  return {
    index: String(index),
    tokens: Array.from(x.inputIds, token),
    input_ids: Array.from(x.inputIds),
    segment_ids: Array.from(x.inputIds, (_, t) => (t < x.segmentALength ? 0 : 1)),
    masked_positions: Array.from(x.maskedPositions),
    masked_tokens: Array.from(x.maskedLabels, token),
    masked_ids: Array.from(x.maskedLabels),
    is_random_next: x.isRandomNext,
  };
}

function shardSetMessage(m: ShardManifest): Message {
  const settings = Object.fromEntries(Object.entries(m.settings).map(([k, v]) => [k, String(v)]));
  return {
    name: m.name,
    vocab: m.vocab.name ?? "",
    corpus: m.corpus.name,
    max_seq_length: m.settings.maxSeqLength,
    whole_word_masking: m.settings.wholeWordMask,
    instances: String(m.instances),
    eval_instances: String(m.evalInstances),
    shards: m.shards.length + m.evalShards.length,
    size_bytes: String(m.bytes),
    id_bytes: m.idBytes,
    created_at: m.createdAt ?? "",
    sources: (m.sources ?? []).map((r) => ({
      corpus: r.name,
      sha256: r.sha256,
      weight: r.weight,
      bytes: String(r.bytes),
      documents: String(r.documents),
      characters: String(r.characters),
      documents_used: String(r.documentsUsed),
      instances: String(r.instances),
      tokens: String(r.tokens),
      eval_instances: String(r.evalInstances),
    })),
    packed: m.settings.packed === true,
    lineage: {
      artifact: { kind: "ARTIFACT_KIND_SHARDS", name: m.name, prefix: `${shardSetPrefix(m.name)}/` },
      inputs: [
        // One input per source read (older sets, without sources, name their one corpus).
        ...(m.sources
          ? m.sources.filter((r) => r.weight > 0)
          : [{ name: m.corpus.name, sha256: m.corpus.sha256 }])
          .map((r) => ({
            role: "corpus",
            ref: { kind: "ARTIFACT_KIND_CORPUS", name: r.name, sha256: r.sha256 },
          })),
        {
          role: "vocab",
          ref: { kind: "ARTIFACT_KIND_VOCAB", name: m.vocab.name ?? "", sha256: m.vocab.sha256 },
        },
      ],
      settings,
      code_version: m.builder.version ?? "",
      job_id: "",
      created_at: m.createdAt ?? "",
    },
  };
}

function protoEvent(jobId: string, event: JobEvent, state: string, startedAt?: string): Message {
  const out = jobEventMessage(jobId, event, state, { startedAt, unit: "bytes" });
  if (event.type === "artifact" && event.data?.name) {
    const name = String(event.data.name);
    out.artifact = { kind: "ARTIFACT_KIND_SHARDS", name, prefix: `${shardSetPrefix(name)}/` };
  }
  const metrics = event.data?.metrics;
  if (metrics && typeof metrics === "object") out.metrics = { ...metrics };
  return out;
}

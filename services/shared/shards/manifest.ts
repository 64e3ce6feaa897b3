/**
 * The manifest of a shard set. A shard set is a store artifact (store/publish.ts): `shards/<name>/` holds
 * `shard-NNNNN.bin` parts and `MANIFEST.json`, written last, whose `metadata` is a {@linkcode ShardManifest}.
 * An interrupted build leaves parts but no manifest, and readers refuse it.
 *
 * @module
 */
import { FailedPrecondition, NotFound } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { listArtifacts, MANIFEST_NAME, readManifest as readArtifactManifest } from "../store/publish.ts";
import { isName, validateName } from "../store/names.ts";
import { FORMAT_VERSION } from "./format.ts";

export const SHARDS_PREFIX = "shards/";

/** Every setting create_pretraining_data.py takes, plus ours. Recorded whole in the manifest. */
export interface PretrainingSettings {
  maxSeqLength: number;
  maxPredictionsPerSeq: number;
  maskedLmProb: number;
  shortSeqProb: number;
  dupeFactor: number;
  seed: number;
  /** Whole-word masking; `wwmSegmenter` names what found the Chinese words. */
  wholeWordMask: boolean;
  wwmSegmenter?: string;
  /** Probability of a random next segment (the paper's 50%). */
  randomNextProb: number;
  /** Text (whole documents) one worker turns into instances at once; random next segments come from the same block. */
  blockBytes: number;
  maxShardBytes: number;
  /** Share of documents whose instances go to the held-out split (`eval-NNNNN.bin`) instead. */
  evalFraction: number;
  /**
   * Packed rows instead of NSP pairs: every instance is `[CLS] t1 ... tn [SEP]` of exactly
   * `maxSeqLength` tokens (only the last row of a block may be shorter), filled with consecutive
   * sentences of a document and going on into the next document after a `[SEP]`. One segment (token
   * types all 0) and no NSP label: the trainer reads this field to turn NSP off. Tokens attend across
   * document boundaries (RoBERTa's FULL-SENTENCES), so no compute goes to padding. Absent in sets
   * built before packing existed, which means false.
   */
  packed?: boolean;
}

/** What one source corpus of a build gave (`sources` of the manifest, in request order). */
export interface SourceReport {
  /** The corpus' name (`corpora/<name>/` for stored corpora). */
  name: string;
  /** sha256 of its bytes as stored (compressed for `.gz`); empty when it was skipped (weight 0). */
  sha256: string;
  /** Multiplier on its documents: 0.5 uses a seeded half of them, 2 uses each twice, 0 skips it. */
  weight: number;
  /** Bytes read as stored. */
  bytes: number;
  /** Documents read, and their characters (Unicode code points of the trimmed lines). */
  documents: number;
  characters: number;
  /** Document uses after the weight (a document used twice counts twice), both splits. */
  documentsUsed: number;
  /** Training instances made of its documents, and their tokens ([CLS]/[SEP] included). */
  instances: number;
  tokens: number;
  /** Held-out instances made of its documents. */
  evalInstances: number;
}

/** The training split (`shard-NNNNN.bin`) or the held-out one (`eval-NNNNN.bin`). */
export type ShardSplit = "train" | "eval";

export interface ShardEntry {
  /** Object name relative to the set's prefix, e.g. `shard-00000.bin`. */
  file: string;
  instances: number;
  bytes: number;
  sha256: string;
}

export interface ShardManifest {
  format: "bertforge-shards";
  formatVersion: number;
  kind: "pretraining";
  name: string;
  /** uint16 or uint32 ids in the shard files. */
  idBytes: 2 | 4;
  instances: number;
  /** Tokens over all instances ([CLS]/[SEP] included). */
  tokens: number;
  /** Masked-LM predictions over all instances. */
  maskedTokens: number;
  /** Instances whose B is a random next (NSP label 1). */
  randomNext: number;
  bytes: number;
  shards: ShardEntry[];
  /** The held-out split: instances of other documents than the training split's. */
  evalInstances: number;
  evalShards: ShardEntry[];
  vocab: {
    name?: string;
    sha256: string;
    size: number;
    clsId: number;
    sepId: number;
    maskId: number;
    padId: number;
  };
  corpus: {
    name: string;
    sha256: string;
    bytes: number;
    documents: number;
    sentences: number;
    files: string[];
  };
  /**
   * Per source, what the build used (absent in sets built before sources existed). With one source
   * it repeats `corpus`; with several, `corpus` is their union (names joined by `+`, one sha256 over
   * all their bytes in order) and `lineage.json` names each source with its own sha256.
   */
  sources?: SourceReport[];
  settings: PretrainingSettings;
  /** What built it (lineage): `bertforge` plus the git commit when known. */
  builder: { name: string; version?: string };
  /** When the set was published (from the store manifest; set by readManifest). */
  createdAt?: string;
}

export function shardSetPrefix(name: string): string {
  return `${SHARDS_PREFIX}${validateName(name)}`;
}

/** Reads and checks the manifest of a complete shard set. */
export async function readManifest(store: ObjectStore, name: string): Promise<ShardManifest> {
  const prefix = shardSetPrefix(name);
  if (!(await store.exists(`${prefix}/${MANIFEST_NAME}`))) {
    const parts = store.list(`${prefix}/`, { recursive: true })[Symbol.asyncIterator]();
    const hasParts = !(await parts.next()).done;
    await parts.return?.();
    if (hasParts) {
      throw new FailedPrecondition(
        `shard set '${name}' is incomplete (no ${MANIFEST_NAME}: its build was interrupted or is still running)`,
      );
    }
    throw new NotFound(`shard set '${name}' does not exist (no ${prefix}/${MANIFEST_NAME})`);
  }
  const artifact = await readArtifactManifest(store, prefix);
  const manifest = artifact.metadata as unknown as ShardManifest;
  checkManifest(manifest, `${prefix}/${MANIFEST_NAME}`);
  manifest.createdAt = artifact.createdAt;
  return manifest;
}

function checkManifest(manifest: ShardManifest, key: string): void {
  if (manifest?.format !== "bertforge-shards") {
    throw new FailedPrecondition(
      `${key}: metadata.format must be "bertforge-shards": got ${JSON.stringify(manifest?.format)}`,
    );
  }
  if (manifest.formatVersion !== FORMAT_VERSION) {
    throw new FailedPrecondition(
      `${key}: shard formatVersion ${manifest.formatVersion} is not supported (this reader reads ${FORMAT_VERSION})`,
    );
  }
  if (!Array.isArray(manifest.shards)) {
    throw new FailedPrecondition(`${key}: metadata.shards must be an array`);
  }
  manifest.evalShards ??= [];
  manifest.evalInstances ??= 0;
  for (
    const [entries, count, field] of [
      [manifest.shards, manifest.instances, "instances"],
      [manifest.evalShards, manifest.evalInstances, "evalInstances"],
    ] as const
  ) {
    const total = entries.reduce((sum, shard) => sum + shard.instances, 0);
    if (total !== count) {
      throw new FailedPrecondition(`${key}: shards hold ${total} instances but ${field} says ${count}`);
    }
  }
}

/** Complete shard sets in the store (those with a manifest), sorted by name. */
export async function listShardSets(store: ObjectStore): Promise<ShardManifest[]> {
  const manifests: ShardManifest[] = [];
  for (const prefix of await listArtifacts(store, SHARDS_PREFIX)) {
    const name = prefix.slice(SHARDS_PREFIX.length);
    if (!isName(name)) continue; // not one a request could name (put there by hand)
    manifests.push(await readManifest(store, name));
  }
  return manifests;
}

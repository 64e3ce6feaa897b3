/**
 * Training checkpoints in the store, written so that a process killed at any moment (including halfway
 * through writing one) resumes from the last complete checkpoint:
 *
 * ```
 * jobs/<id>/checkpoints/<step, 9 digits>/model.safetensors     weights, HF names
 *                                        optimizer.safetensors AdamW moments as `m.<name>` / `v.<name>`
 *                                        state.json            step, micro-step, engine RNG, data cursor, loop state
 *                                        manifest.json         written LAST: size and sha256 of the three parts
 * jobs/<id>/best/...                                           the same layout, weights of the best evaluation
 * ```
 *
 * A checkpoint folder without a manifest, or whose parts do not match it, is incomplete and ignored (and
 * cleaned up by the next prune). Steps are zero-padded so the store's ascending listing is step order.
 */
import { decodeSafetensors, encodeSafetensors } from "../shared/model/safetensors.ts";
import type { TrainState, Weights } from "../shared/engine/engine.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { BertforgeError, FailedPrecondition } from "../shared/errors.ts";
import { Sha256 } from "../shared/store/hash.ts";

export const CHECKPOINT_FORMAT = "bertforge-checkpoint";
export const CHECKPOINT_VERSION = 1;

/** What a checkpoint holds besides tensors: everything the loop needs to continue bit-identically. */
export interface CheckpointState {
  step: number;
  microStep: number;
  /** Engine dropout RNG (TrainState.rng), opaque. */
  rng: unknown;
  /** The data reader's cursor (position after the last micro-batch consumed), opaque. */
  cursor: unknown;
  /** The loop's own bookkeeping (curves, best metric, timers), opaque to this module. */
  loop: unknown;
}

export interface Checkpoint {
  step: number;
  weights: Weights;
  trainState: TrainState;
  state: CheckpointState;
}

interface ManifestPart {
  name: string;
  size: number;
  sha256: string;
}

interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  step: number;
  createdAt: string;
  parts: ManifestPart[];
}

export function checkpointsPrefix(jobId: string): string {
  return `jobs/${jobId}/checkpoints/`;
}

export function checkpointPrefix(jobId: string, step: number): string {
  return `${checkpointsPrefix(jobId)}${String(step).padStart(9, "0")}/`;
}

export function bestPrefix(jobId: string): string {
  return `jobs/${jobId}/best/`;
}

/** Retries a store operation that failed for a transient reason (network, UNAVAILABLE), with backoff. */
export async function withRetry<T>(
  what: string,
  operation: () => Promise<T>,
  options: { attempts?: number; baseDelayMs?: number; onRetry?: (attempt: number, error: Error) => void } =
    {},
): Promise<T> {
  const attempts = options.attempts ?? 6;
  const base = options.baseDelayMs ?? 250;
  for (let attempt = 1;; attempt++) {
    try {
      return await operation();
    } catch (error) {
      // Domain errors (NotFound, InvalidArgument...) say something true about the request: retrying won't help.
      const transient = !(error instanceof BertforgeError) || error.code === "UNAVAILABLE";
      if (!transient || attempt >= attempts) {
        if (transient) {
          throw new FailedPrecondition(
            `${what} failed after ${attempt} attempts: ${(error as Error).message}`,
            {
              cause: error,
            },
          );
        }
        throw error;
      }
      options.onRetry?.(attempt, error as Error);
      await new Promise((r) => setTimeout(r, base * 2 ** (attempt - 1)));
    }
  }
}

function momentsToTensors(state: TrainState, weights: Weights): Weights {
  const out: Weights = new Map();
  for (const [name, { m, v }] of state.moments) {
    const shape = weights.get(name)?.shape ?? [m.length];
    out.set(`m.${name}`, { shape, data: m });
    out.set(`v.${name}`, { shape, data: v });
  }
  return out;
}

function tensorsToMoments(tensors: Weights): TrainState["moments"] {
  const moments: TrainState["moments"] = new Map();
  for (const [key, t] of tensors) {
    const kind = key.slice(0, 2), name = key.slice(2);
    if (kind !== "m." && kind !== "v.") continue;
    const entry = moments.get(name) ?? { m: new Float32Array(0), v: new Float32Array(0) };
    if (kind === "m.") entry.m = t.data;
    else entry.v = t.data;
    moments.set(name, entry);
  }
  return moments;
}

async function writeParts(
  store: ObjectStore,
  prefix: string,
  step: number,
  parts: Array<[string, Uint8Array | string]>,
): Promise<string> {
  const written: ManifestPart[] = [];
  for (const [name, data] of parts) {
    const info = await withRetry(`writing ${prefix}${name}`, () => store.put(`${prefix}${name}`, data));
    const size = typeof data === "string" ? new TextEncoder().encode(data).length : data.length;
    written.push({ name, size, sha256: info.sha256 ?? sha256Of(data) });
  }
  const manifest: CheckpointManifest = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    step,
    createdAt: new Date().toISOString(),
    parts: written,
  };
  const key = `${prefix}manifest.json`;
  await withRetry(`writing ${key}`, () => store.putJson(key, manifest));
  return key;
}

function sha256Of(data: Uint8Array | string): string {
  const hasher = new Sha256();
  hasher.update(typeof data === "string" ? new TextEncoder().encode(data) : data);
  return hasher.hex();
}

/** Writes a complete checkpoint (manifest last); returns its prefix. */
export async function saveCheckpoint(
  store: ObjectStore,
  jobId: string,
  checkpoint: Checkpoint,
): Promise<string> {
  const prefix = checkpointPrefix(jobId, checkpoint.step);
  // A leftover of a write killed halfway has no manifest; clear it so stale parts never mix with new ones.
  await withRetry(`clearing ${prefix}`, () => store.deletePrefix(prefix));
  await writeParts(store, prefix, checkpoint.step, [
    ["model.safetensors", encodeSafetensors(checkpoint.weights)],
    ["optimizer.safetensors", encodeSafetensors(momentsToTensors(checkpoint.trainState, checkpoint.weights))],
    [
      "state.json",
      JSON.stringify({ format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, ...checkpoint.state }),
    ],
  ]);
  return prefix;
}

/** Reads and verifies a checkpoint's manifest and parts; null when incomplete or corrupt. */
async function readComplete(
  store: ObjectStore,
  prefix: string,
): Promise<Map<string, Uint8Array> | null> {
  let manifest: CheckpointManifest;
  try {
    manifest = await withRetry(
      `reading ${prefix}manifest.json`,
      () => store.getJson(`${prefix}manifest.json`),
    );
  } catch (error) {
    if (
      error instanceof BertforgeError && (error.code === "NOT_FOUND" || error.code === "FAILED_PRECONDITION")
    ) {
      return null;
    }
    throw error;
  }
  if (manifest.format !== CHECKPOINT_FORMAT || manifest.version !== CHECKPOINT_VERSION) {
    throw new FailedPrecondition(
      `checkpoint ${prefix} has format ${manifest.format} v${manifest.version}; this trainer reads ${CHECKPOINT_FORMAT} v${CHECKPOINT_VERSION}`,
    );
  }
  const parts = new Map<string, Uint8Array>();
  for (const part of manifest.parts) {
    let bytes: Uint8Array;
    try {
      bytes = await withRetry(`reading ${prefix}${part.name}`, () => store.get(`${prefix}${part.name}`));
    } catch (error) {
      if (error instanceof BertforgeError && error.code === "NOT_FOUND") return null;
      throw error;
    }
    if (bytes.length !== part.size || sha256Of(bytes) !== part.sha256) return null;
    parts.set(part.name, bytes);
  }
  return parts;
}

function decodeCheckpoint(parts: Map<string, Uint8Array>): Checkpoint {
  const state = JSON.parse(new TextDecoder().decode(parts.get("state.json")!)) as CheckpointState & {
    format: string;
    version: number;
  };
  const weights = decodeSafetensors(parts.get("model.safetensors")!).weights;
  const moments = tensorsToMoments(decodeSafetensors(parts.get("optimizer.safetensors")!).weights);
  return {
    step: state.step,
    weights,
    trainState: { step: state.step, microStep: state.microStep, moments, rng: state.rng },
    state: {
      step: state.step,
      microStep: state.microStep,
      rng: state.rng,
      cursor: state.cursor,
      loop: state.loop,
    },
  };
}

/** Steps of the checkpoint folders present (complete or not), ascending. */
export async function listCheckpointSteps(store: ObjectStore, jobId: string): Promise<number[]> {
  const steps: number[] = [];
  const prefix = checkpointsPrefix(jobId);
  for await (const info of store.list(prefix)) {
    const m = /\/(\d{9})\/$/.exec(info.key);
    if (info.isPrefix && m) steps.push(Number(m[1]));
  }
  return steps.sort((a, b) => a - b);
}

/** The newest complete checkpoint of a job, or null when it has none (a fresh start). */
export async function loadLatestCheckpoint(store: ObjectStore, jobId: string): Promise<Checkpoint | null> {
  const steps = await listCheckpointSteps(store, jobId);
  for (const step of steps.reverse()) {
    const parts = await readComplete(store, checkpointPrefix(jobId, step));
    if (parts) return decodeCheckpoint(parts);
  }
  return null;
}

/** Deletes all but the newest `keep` complete checkpoints, and incomplete ones older than the newest complete. */
export async function pruneCheckpoints(store: ObjectStore, jobId: string, keep: number): Promise<void> {
  const steps = await listCheckpointSteps(store, jobId);
  const complete: number[] = [];
  for (const step of steps) {
    if (await store.exists(`${checkpointPrefix(jobId, step)}manifest.json`)) complete.push(step);
  }
  const kept = new Set(complete.slice(-Math.max(1, keep)));
  const newest = complete[complete.length - 1] ?? -1;
  for (const step of steps) {
    if (kept.has(step) || step > newest) continue;
    // Manifest first: a prune killed halfway leaves an incomplete (ignored) folder, never a corrupt "complete" one.
    const prefix = checkpointPrefix(jobId, step);
    await withRetry(`deleting ${prefix}`, async () => {
      if (await store.exists(`${prefix}manifest.json`)) await store.delete(`${prefix}manifest.json`);
      await store.deletePrefix(prefix);
    });
  }
}

/** Keeps the weights of the best evaluation so far (early stopping publishes these). */
export async function saveBest(
  store: ObjectStore,
  jobId: string,
  step: number,
  weights: Weights,
  metrics: Record<string, number>,
): Promise<void> {
  const prefix = bestPrefix(jobId);
  await withRetry(`clearing ${prefix}`, async () => {
    if (await store.exists(`${prefix}manifest.json`)) await store.delete(`${prefix}manifest.json`);
    await store.deletePrefix(prefix);
  });
  await writeParts(store, prefix, step, [
    ["model.safetensors", encodeSafetensors(weights)],
    ["metrics.json", JSON.stringify({ step, metrics })],
  ]);
}

export async function loadBest(
  store: ObjectStore,
  jobId: string,
): Promise<{ step: number; weights: Weights; metrics: Record<string, number> } | null> {
  const parts = await readComplete(store, bestPrefix(jobId));
  if (!parts) return null;
  const { step, metrics } = JSON.parse(new TextDecoder().decode(parts.get("metrics.json")!));
  return { step, metrics, weights: decodeSafetensors(parts.get("model.safetensors")!).weights };
}

/**
 * The model store: `models/<name>/<version>/` in the Hugging Face layout (config.json, model.safetensors,
 * vocab.txt, tokenizer.json, tokenizer_config.json) plus metrics.json, lineage.json and pictures, published
 * with a manifest written last (store/publish.ts), so a half-written version is never visible.
 *
 * Names, versions (UTC timestamps `YYYYMMDDTHHMMSSZ`), prefixes and "pinned or latest" resolution are shared
 * with the inference service (shared/model/registry.ts). A job fixes its version before writing anything
 * (`jobs/<id>/publish.json`), so a trainer killed halfway through publishing finishes the same version on
 * restart instead of adding a second one.
 */
import { join } from "node:path";
import type { Weights } from "../shared/engine/engine.ts";
import type { HeadSpec } from "../shared/engine/engine.ts";
import type { BertConfig } from "../shared/model/config.ts";
import { loadModelDir, type ModelDir, saveModelDir } from "../shared/model/checkpoint.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import {
  ArtifactWriter,
  deleteArtifact,
  isPublished,
  listArtifacts,
  type Manifest,
  readManifest,
} from "../shared/store/publish.ts";
import {
  modelPrefix,
  MODELS_PREFIX,
  resolveVersion,
  validateName,
  versionFor,
} from "../shared/model/registry.ts";
import { withRetry } from "./checkpoint.ts";

/** The version a request names, or the latest; NotFound naming `field` and the model when there is none. */
export async function resolveModel(
  store: ObjectStore,
  ref: { name: string; version?: string },
  field = "model",
): Promise<{ name: string; version: string; prefix: string }> {
  const version = await resolveVersion(store, ref.name, ref.version, field);
  return { name: ref.name, version, prefix: modelPrefix(ref.name, version) };
}

/** Copies a published artifact's parts into a local folder (streamed), returning its manifest. */
export async function downloadArtifact(store: ObjectStore, prefix: string, dir: string): Promise<Manifest> {
  const manifest = await readManifest(store, prefix);
  for (const part of manifest.parts) {
    const path = join(dir, ...part.name.split("/"));
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await withRetry(`downloading ${prefix}/${part.name}`, async () => {
      const stream = await store.getStream(`${manifest.prefix}/${part.name}`);
      const file = await Deno.open(path, { write: true, create: true, truncate: true });
      await stream.pipeTo(file.writable);
    });
  }
  return manifest;
}

export interface LoadedModel extends ModelDir {
  name: string;
  version: string;
  prefix: string;
  manifest: Manifest;
  initialized?: string[];
  dropped?: string[];
}

/** Loads a model version from the store (fitted to `head` when given: see loadModelDir). */
export async function loadModel(
  store: ObjectStore,
  ref: { name: string; version?: string },
  options: { head?: HeadSpec; seed?: number; field?: string } = {},
): Promise<LoadedModel> {
  const resolved = await resolveModel(store, ref, options.field);
  const dir = await Deno.makeTempDir({ prefix: "bertforge-model-" });
  try {
    const manifest = await downloadArtifact(store, resolved.prefix, dir);
    const loaded = await loadModelDir(dir, {
      ...(options.head ? { head: options.head } : {}),
      ...(options.seed !== undefined ? { seed: options.seed } : {}),
    });
    return { ...loaded, ...resolved, manifest };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

export interface PublishModelOptions {
  name: string;
  /** A fixed version (resume of a half-finished publish); a fresh timestamp when absent. */
  version?: string;
  config: BertConfig;
  head: HeadSpec;
  labels?: string[];
  weights: Weights;
  vocabText: string;
  tokenizerJson?: string;
  /** metrics.json, lineage.json, loss.svg, ... */
  extraFiles?: Record<string, string | Uint8Array>;
  /** Manifest metadata (what ListModels shows without reading config.json). */
  metadata?: Record<string, unknown>;
}

/** A version no other publish of `name` has used: the timestamp now, bumped a second while taken. */
export async function freshVersion(store: ObjectStore, name: string, now = new Date()): Promise<string> {
  const taken = new Set<string>();
  for await (const info of store.list(`${MODELS_PREFIX}${validateName(name)}/`)) {
    if (info.isPrefix) taken.add(info.key.split("/")[2]!);
  }
  let t = now.getTime();
  while (taken.has(versionFor(new Date(t)))) t += 1000;
  return versionFor(new Date(t));
}

/** Writes the HF layout (via saveModelDir, so config and tokenizer files match every other writer), then publishes. */
export async function publishModel(
  store: ObjectStore,
  options: PublishModelOptions,
): Promise<{ name: string; version: string; prefix: string; manifest: Manifest }> {
  const version = options.version ?? await freshVersion(store, options.name);
  const prefix = modelPrefix(validateName(options.name), version);
  if (await isPublished(store, prefix)) {
    // Published before the process died: the same job's version is complete, nothing to redo.
    return { name: options.name, version, prefix, manifest: await readManifest(store, prefix) };
  }
  const dir = await Deno.makeTempDir({ prefix: "bertforge-publish-" });
  const modelDir = join(dir, "model");
  try {
    await saveModelDir(modelDir, {
      config: options.config,
      head: options.head,
      ...(options.labels ? { labels: options.labels } : {}),
      weights: options.weights,
      vocabText: options.vocabText,
      ...(options.tokenizerJson !== undefined ? { tokenizerJson: options.tokenizerJson } : {}),
      ...(options.extraFiles ? { extraFiles: options.extraFiles } : {}),
    });
    // Parts left by a publish that was killed halfway are replaced; the manifest goes last.
    await store.deletePrefix(`${prefix}/`);
    const writer = await ArtifactWriter.begin(store, prefix);
    const names: string[] = [];
    for await (const entry of Deno.readDir(modelDir)) if (entry.isFile) names.push(entry.name);
    for (const name of names.sort()) {
      await withRetry(`publishing ${prefix}/${name}`, async () => {
        const file = await Deno.open(join(modelDir, name));
        return await writer.put(name, file.readable);
      });
    }
    const manifest = await writer.commit({
      kind: "model",
      name: options.name,
      version,
      task: options.head.task,
      ...(options.labels ? { labels: options.labels } : {}),
      ...(options.head.crf ? { crf: true } : {}),
      ...options.metadata,
    });
    return { name: options.name, version, prefix, manifest };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Deletes one model version (manifest first). */
export async function deleteModel(store: ObjectStore, name: string, version: string): Promise<void> {
  await deleteArtifact(store, modelPrefix(validateName(name), version));
}

export interface ModelListing {
  name: string;
  version: string;
  prefix: string;
  config: BertConfig;
  manifest: Manifest;
  sizeBytes: number;
}

/** Every published version (or one model's), newest first. */
export async function listModels(store: ObjectStore, name?: string): Promise<ModelListing[]> {
  const parent = name ? `${MODELS_PREFIX}${validateName(name)}/` : MODELS_PREFIX;
  const out: ModelListing[] = [];
  for (const prefix of await listArtifacts(store, parent)) {
    const [, modelName, version] = prefix.split("/");
    if (!modelName || !version) continue;
    const manifest = await readManifest(store, prefix);
    let config: BertConfig;
    try {
      config = await store.getJson<BertConfig>(`${prefix}/config.json`);
    } catch {
      continue; // not a model (a stray artifact under models/)
    }
    out.push({
      name: modelName,
      version,
      prefix,
      config,
      manifest,
      sizeBytes: manifest.parts.reduce((a, p) => a + p.size, 0),
    });
  }
  return out.sort((
    a,
    b,
  ) => (a.version < b.version ? 1 : a.version > b.version ? -1 : a.name < b.name ? -1 : 1));
}

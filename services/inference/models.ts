/**
 * Model versions in the store, as the inference service reads them: `models/<name>/<version>/` in the Hugging
 * Face layout, visible once its MANIFEST.json is published (store/publish.ts). The trainer writes these; this
 * file only reads them. Names, versions and resolving "the latest version" are shared with the trainer
 * (shared/model/registry.ts).
 */
import { InvalidArgument, NotFound } from "../shared/errors.ts";
import type { Weights } from "../shared/engine/engine.ts";
import { canonicalName, headFromConfig, TIED_TENSORS } from "../shared/model/checkpoint.ts";
import { type BertConfig, parseConfig } from "../shared/model/config.ts";
import { decodeSafetensors } from "../shared/model/safetensors.ts";
import type { HeadSpec } from "../shared/engine/engine.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { type Manifest, readManifest } from "../shared/store/publish.ts";
import { modelPrefix } from "../shared/model/registry.ts";

/** One published model version read into memory: everything the registry needs to serve it. */
export interface StoredModel {
  name: string;
  version: string;
  prefix: string;
  manifest: Manifest;
  config: BertConfig;
  /** config.json exactly as stored (ModelInfo returns it). */
  configJson: string;
  head: HeadSpec | undefined;
  weights: Weights;
  vocabText: string;
  tokenizerJson?: string;
  tokenizerConfig?: Record<string, unknown>;
  /** lineage.json (proto3 JSON of bertforge.v1.Lineage) when present. */
  lineage?: Record<string, unknown>;
  /** metrics.json when present. */
  metrics?: Record<string, unknown>;
  /** model.onnx bytes when the version carries an ONNX export. */
  onnx?: Uint8Array;
  sizeBytes: number;
}

async function optionalText(
  store: ObjectStore,
  manifest: Manifest,
  name: string,
): Promise<string | undefined> {
  if (!manifest.parts.some((p) => p.name === name)) return undefined;
  return await store.getText(`${manifest.prefix}/${name}`);
}

function parseJsonPart(text: string | undefined, key: string): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : undefined;
  } catch (error) {
    throw new InvalidArgument(`${key} is not valid JSON: ${(error as Error).message}`);
  }
}

/** Reads config.json (and the manifest) of a version without its weights: what listings show. */
export async function readModelConfig(
  store: ObjectStore,
  name: string,
  version: string,
): Promise<{ manifest: Manifest; config: BertConfig; configJson: string }> {
  const manifest = await readManifest(store, modelPrefix(name, version));
  const configJson = await optionalText(store, manifest, "config.json");
  if (configJson === undefined) throw new NotFound(`model ${name}/${version} has no config.json`);
  return { manifest, config: parseConfig(configJson), configJson };
}

/** lineage.json and metrics.json of a version, when it has them. */
export async function readStoredModelExtras(
  store: ObjectStore,
  manifest: Manifest,
): Promise<{ lineage?: Record<string, unknown>; metrics?: Record<string, unknown> }> {
  const key = (part: string) => `${manifest.prefix}/${part}`;
  const lineage = parseJsonPart(await optionalText(store, manifest, "lineage.json"), key("lineage.json"));
  const metrics = parseJsonPart(await optionalText(store, manifest, "metrics.json"), key("metrics.json"));
  return { ...(lineage ? { lineage } : {}), ...(metrics ? { metrics } : {}) };
}

/**
 * Reads one published version (config, weights with canonical HF names, vocab, tokenizer files, lineage,
 * metrics, model.onnx when present) straight from the store into memory.
 */
export async function readStoredModel(
  store: ObjectStore,
  name: string,
  version: string,
): Promise<StoredModel> {
  const { manifest, config, configJson } = await readModelConfig(store, name, version);
  const key = (part: string) => `${manifest.prefix}/${part}`;
  if (!manifest.parts.some((p) => p.name === "model.safetensors")) {
    throw new NotFound(`model ${name}/${version} has no model.safetensors`);
  }
  const { weights: raw } = decodeSafetensors(await store.get(key("model.safetensors")));
  const weights: Weights = new Map();
  for (const [tensorName, tensor] of raw) {
    const canonical = canonicalName(tensorName);
    if (canonical in TIED_TENSORS) continue; // the engines tie these to their sources
    weights.set(canonical, tensor);
  }
  const vocabText = await optionalText(store, manifest, "vocab.txt");
  if (vocabText === undefined) throw new NotFound(`model ${name}/${version} has no vocab.txt`);
  const tokenizerJson = await optionalText(store, manifest, "tokenizer.json");
  const tokenizerConfig = parseJsonPart(
    await optionalText(store, manifest, "tokenizer_config.json"),
    key("tokenizer_config.json"),
  );
  const { lineage, metrics } = await readStoredModelExtras(store, manifest);
  const onnx = manifest.parts.some((p) => p.name === "model.onnx")
    ? await store.get(key("model.onnx"))
    : undefined;
  return {
    name,
    version,
    prefix: manifest.prefix,
    manifest,
    config,
    configJson,
    head: headFromConfig(config),
    weights,
    vocabText,
    ...(tokenizerJson !== undefined ? { tokenizerJson } : {}),
    ...(tokenizerConfig ? { tokenizerConfig } : {}),
    ...(lineage ? { lineage } : {}),
    ...(metrics ? { metrics } : {}),
    ...(onnx ? { onnx } : {}),
    sizeBytes: manifest.parts.reduce((sum, p) => sum + p.size, 0),
  };
}

/** metrics.json flattened to numbers (`eval.f1`, `per_label.POS.f1`); arrays and strings are skipped. */
export function flattenMetrics(metrics: Record<string, unknown> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (value: unknown, path: string, depth: number) => {
    if (typeof value === "number" && Number.isFinite(value)) out[path] = value;
    else if (value !== null && typeof value === "object" && !Array.isArray(value) && depth < 4) {
      for (const [k, v] of Object.entries(value)) walk(v, path ? `${path}.${k}` : k, depth + 1);
    }
  };
  walk(metrics, "", 0);
  return out;
}

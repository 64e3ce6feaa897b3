/**
 * Test and benchmark support: tiny models with random weights, published into a store the way the trainer
 * publishes them (`models/<name>/<version>/` with a manifest written last), written through checkpoint.ts's
 * saveModelDir so the files are the real HF layout.
 *
 * Sizes are small and odd (hidden 36, 3 heads, intermediate 37, 2 layers) so swapped dimensions fail loudly
 * and a forward pass takes well under a millisecond.
 */
import { join } from "@std/path";
import type { HeadSpec, TaskKind } from "../shared/engine/engine.ts";
import { initWeights, saveModelDir } from "../shared/model/checkpoint.ts";
import { type BertConfig, validateConfig } from "../shared/model/config.ts";
import { versionFor } from "../shared/model/registry.ts";
import { publish } from "../shared/store/publish.ts";
import type { ObjectStore } from "../shared/store/store.ts";

/** Specials, Chinese characters, English words and continuation pieces: enough for every operation. */
export const TINY_VOCAB: string[] = [
  "[PAD]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  ..."的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年好很差酒店服务房间位置北京上海张三李四今天天气总之。，！？,.!?"
    .split(""),
  "hello",
  "world",
  "good",
  "bad",
  "movie",
  "the",
  "is",
  "un",
  "##believ",
  "##able",
  "##s",
  "##ing",
  "great",
  "terrible",
];

export interface TinyModelOptions {
  task: TaskKind;
  labels?: string[];
  crf?: boolean;
  /** HeadSpec.pooling: a classifier on the mean of the last layer (no pooler tensors). */
  pooling?: "mean";
  seed?: number;
  /** Overrides of the tiny config (e.g. max_position_embeddings, hidden_size). */
  config?: Partial<BertConfig>;
  /** A fixed version; default a fresh timestamp-like string that sorts after earlier calls. */
  version?: string;
  /** Extra config.json keys (bertforge_max_length, bertforge_thresholds). */
  extraConfig?: Record<string, unknown>;
  /** Extra files of the version (lineage.json, metrics.json). */
  extraFiles?: Record<string, string>;
  /** Also publish `model.onnx` (needs services/shared/model/onnx/export.ts; see loadOnnxExporter). */
  onnx?: boolean;
}

type ExportOnnx = (
  path: string,
  model: {
    config: BertConfig;
    head: HeadSpec;
    weights: Map<string, { shape: number[]; data: Float32Array }>;
  },
) => Promise<void>;

/**
 * The shared ONNX exporter when it is in this checkout, else undefined. Imported by a computed specifier so
 * this file type-checks and runs before the exporter lands.
 */
export async function loadOnnxExporter(): Promise<ExportOnnx | undefined> {
  const url = new URL("../shared/model/onnx/export.ts", import.meta.url);
  try {
    await Deno.stat(url);
    const mod = await import(url.href);
    return typeof mod.exportOnnx === "function" ? mod.exportOnnx as ExportOnnx : undefined;
  } catch {
    return undefined;
  }
}

let versionCounter = 0;

/** A version string like the trainer's (`YYYYMMDDTHHMMSSZ`), strictly increasing within a process. */
export function nextVersion(): string {
  const t = new Date(Date.UTC(2026, 0, 1) + (Date.now() % 1_000_000_000) + versionCounter++ * 1000);
  return versionFor(t);
}

export function tinyConfig(overrides: Partial<BertConfig> = {}): BertConfig {
  return validateConfig({
    vocab_size: TINY_VOCAB.length,
    hidden_size: 36,
    num_hidden_layers: 2,
    num_attention_heads: 3,
    intermediate_size: 37,
    hidden_act: "gelu",
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    max_position_embeddings: 64,
    type_vocab_size: 2,
    initializer_range: 0.2,
    layer_norm_eps: 1e-12,
    pad_token_id: 0,
    model_type: "bert",
    ...overrides,
  } as BertConfig);
}

/** Publishes a tiny random model as `models/<name>/<version>/`; returns its version. */
export async function publishTinyModel(
  store: ObjectStore,
  name: string,
  options: TinyModelOptions,
): Promise<string> {
  const config = { ...tinyConfig(options.config), ...(options.extraConfig ?? {}) } as BertConfig;
  const labels = options.labels ??
    (options.task === "ner"
      ? ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
      : options.task === "pretrain"
      ? undefined
      : [
        "negative",
        "positive",
      ]);
  const head: HeadSpec = {
    task: options.task,
    ...(labels ? { numLabels: labels.length } : {}),
    ...(options.crf ? { crf: true } : {}),
    ...(options.pooling ? { pooling: options.pooling } : {}),
  };
  const weights = initWeights(config, head, options.seed ?? 7);
  const dir = await Deno.makeTempDir({ prefix: "bertforge-tiny-model-" });
  try {
    const modelDir = join(dir, "model");
    await saveModelDir(modelDir, {
      config,
      head,
      ...(labels ? { labels } : {}),
      weights,
      vocabText: TINY_VOCAB.join("\n") + "\n",
      ...(options.extraFiles ? { extraFiles: options.extraFiles } : {}),
    });
    if (options.onnx) {
      const exportOnnx = await loadOnnxExporter();
      if (!exportOnnx) throw new Error("onnx: services/shared/model/onnx/export.ts is not in this checkout");
      await exportOnnx(join(modelDir, "model.onnx"), { config, head, weights });
    }
    const version = options.version ?? nextVersion();
    const parts: Record<string, Uint8Array> = {};
    for await (const entry of Deno.readDir(modelDir)) {
      if (entry.isFile) parts[entry.name] = await Deno.readFile(join(modelDir, entry.name));
    }
    await publish(store, `models/${name}/${version}`, parts, {
      metadata: { kind: "model", name, version, task: options.task, source: "trained" },
    });
    return version;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

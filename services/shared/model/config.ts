/**
 * BERT configuration in Hugging Face `config.json` terms, and the presets bertforge knows by name.
 *
 * Shape letters used across the model and engine: B batch, T sequence length, C hidden size, NH heads,
 * HS head size (C / NH), F intermediate size, V vocab size, L layers, K labels.
 */
import { InvalidArgument } from "../errors.ts";

export interface BertConfig {
  vocab_size: number; // V
  hidden_size: number; // C
  num_hidden_layers: number; // L
  num_attention_heads: number; // NH
  intermediate_size: number; // F
  hidden_act: "gelu"; // exact erf GELU, as BERT and HF `gelu`
  hidden_dropout_prob: number;
  attention_probs_dropout_prob: number;
  max_position_embeddings: number;
  type_vocab_size: number;
  initializer_range: number;
  layer_norm_eps: number;
  pad_token_id: number;
  /** Head labels, as Hugging Face writes them for sequence/token classification models. */
  id2label?: Record<string, string>;
  label2id?: Record<string, number>;
  /** HF `problem_type`: "single_label_classification" | "multi_label_classification". */
  problem_type?: string;
  architectures?: string[];
  model_type?: "bert";
  /**
   * Where each encoder layer puts its LayerNorms (bertforge's own key; absent means "post"). See
   * `LayerNormPlacement`: a "pre" model does not load correctly in Hugging Face's BertModel.
   */
  bertforge_layer_norm?: LayerNormPlacement;
  /** Anything else a config.json carried, kept so a round trip loses nothing. */
  [extra: string]: unknown;
}

/**
 * "post" (the default, absent from config.json): BERT as Devlin et al. and HF `BertModel`,
 * x = LN1(x + Attn(x)); x = LN2(x + FFN(x)).
 *
 * "pre": x = x + Attn(LN1(x)); x = x + FFN(LN2(x)) in every layer, then one more LayerNorm on the last layer's
 * output before the heads (Cramming, GPT-2, `nn.TransformerEncoderLayer(norm_first=True)` + a final norm). Trains
 * stably at higher learning rates and without warmup sensitivity. Tensor names: LN1 and LN2 keep HF's
 * `bert.encoder.layer.<l>.attention.output.LayerNorm` and `bert.encoder.layer.<l>.output.LayerNorm` (same shapes,
 * pre-LN meaning), the final one is `bert.encoder.LayerNorm` (see FINAL_LAYER_NORM); the embedding LayerNorm stays.
 *
 * Hugging Face transformers cannot run a "pre" model: `BertModel` is post-LN only and ignores the config key, so
 * it would load every tensor but `bert.encoder.LayerNorm.*` (reported as unused) and compute a different function
 * without an error. Exports to HF must refuse or warn; ONNX export (model/onnx/export.ts) writes the pre-LN graph.
 */
export type LayerNormPlacement = "pre" | "post";

/** The extra LayerNorm of a pre-LN encoder, on the last layer's output (`.weight`, `.bias`, shape [C]). */
export const FINAL_LAYER_NORM = "bert.encoder.LayerNorm";

/** The config's LayerNorm placement, "post" when the key is absent. */
export function layerNormPlacement(config: BertConfig): LayerNormPlacement {
  return config.bertforge_layer_norm ?? "post";
}

/** True for a pre-LN encoder (bertforge_layer_norm "pre"). */
export function isPreLayerNorm(config: BertConfig): boolean {
  return layerNormPlacement(config) === "pre";
}

const COMMON = {
  hidden_act: "gelu" as const,
  hidden_dropout_prob: 0.1,
  attention_probs_dropout_prob: 0.1,
  max_position_embeddings: 512,
  type_vocab_size: 2,
  initializer_range: 0.02,
  layer_norm_eps: 1e-12,
  pad_token_id: 0,
  model_type: "bert" as const,
};

/** Presets by name (Turc et al. 2019 for mini/small; Devlin et al. 2019 for base). Parameter counts at V=21128. */
export const PRESETS: Record<string, Omit<BertConfig, "vocab_size">> = {
  // ~8.9M parameters at V=21128 (parameterCount, pretraining heads included; ~11.2M at V=30522)
  "bert-mini": {
    ...COMMON,
    hidden_size: 256,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    intermediate_size: 1024,
  },
  // ~24.2M parameters at V=21128 (~28.8M at V=30522)
  "bert-small": {
    ...COMMON,
    hidden_size: 512,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    intermediate_size: 2048,
  },
  // ~102.9M parameters at V=21128 (bert-base-chinese)
  "bert-base": {
    ...COMMON,
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 3072,
  },
};

/** A preset by name with the vocabulary size filled in; unknown names are an InvalidArgument listing the known ones. */
export function presetConfig(name: string, vocabSize: number): BertConfig {
  const preset = PRESETS[name];
  if (!preset) {
    throw new InvalidArgument(
      `unknown arch '${name}': expected one of ${Object.keys(PRESETS).join(", ")} or a config.json`,
    );
  }
  return validateConfig({ ...preset, vocab_size: vocabSize } as BertConfig);
}

/** Parses a Hugging Face config.json (text or object), filling BERT defaults and checking every dimension. */
export function parseConfig(json: string | Record<string, unknown>): BertConfig {
  let raw: Record<string, unknown>;
  try {
    raw = typeof json === "string" ? JSON.parse(json) : json;
  } catch (e) {
    throw new InvalidArgument(`config.json is not valid JSON: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new InvalidArgument("config.json must hold a JSON object");
  }
  if (raw.model_type !== undefined && raw.model_type !== "bert") {
    throw new InvalidArgument(`config.json model_type is '${raw.model_type}': only 'bert' is supported`);
  }
  const act = raw.hidden_act ?? "gelu";
  if (act !== "gelu") {
    throw new InvalidArgument(`config.json hidden_act is '${act}': only exact 'gelu' is supported`);
  }
  return validateConfig({ ...COMMON, ...raw, hidden_act: "gelu" } as BertConfig);
}

export function validateConfig(config: BertConfig): BertConfig {
  const positive = [
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
  ] as const;
  for (const key of positive) {
    const v = config[key];
    if (!Number.isInteger(v) || v <= 0) {
      throw new InvalidArgument(`config ${key} must be a positive integer: current value is ${v}`);
    }
  }
  if (config.hidden_size % config.num_attention_heads !== 0) {
    throw new InvalidArgument(
      `config hidden_size ${config.hidden_size} must be divisible by num_attention_heads ${config.num_attention_heads}`,
    );
  }
  for (const key of ["hidden_dropout_prob", "attention_probs_dropout_prob"] as const) {
    const p = config[key];
    if (!(p >= 0 && p < 1)) {
      throw new InvalidArgument(`config ${key} must be in [0, 1): current value is ${p}`);
    }
  }
  const placement: unknown = config.bertforge_layer_norm;
  if (placement !== undefined && placement !== "pre" && placement !== "post") {
    throw new InvalidArgument(
      `config bertforge_layer_norm must be "pre" or "post" (absent means "post", HF BERT): current value is ${
        JSON.stringify(placement)
      }`,
    );
  }
  if (!(config.layer_norm_eps > 0)) {
    throw new InvalidArgument(
      `config layer_norm_eps must be positive: current value is ${config.layer_norm_eps}`,
    );
  }
  return config;
}

/** Number of labels of a classification head, from id2label. */
export function numLabels(config: BertConfig): number {
  return config.id2label ? Object.keys(config.id2label).length : 0;
}

/** Parameter count of the encoder + pretraining heads (tied decoder counted once). */
export function parameterCount(c: BertConfig): number {
  const C = c.hidden_size, F = c.intermediate_size;
  const embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * C + 2 * C;
  // Q, K, V, attention output; two LayerNorms; the FFN's two linears
  const layer = 4 * (C * C + C) + 2 * (2 * C) + (C * F + F) + (F * C + C);
  const pooler = C * C + C;
  const mlmHead = C * C + C + 2 * C + c.vocab_size;
  const nsp = 2 * C + 2;
  const finalNorm = isPreLayerNorm(c) ? 2 * C : 0;
  return embeddings + c.num_hidden_layers * layer + finalNorm + pooler + mlmHead + nsp;
}

/** The dropout on a fine-tuning head's input: HF's `classifier_dropout` when the config sets it, else the hidden dropout. */
export function classifierDropout(config: BertConfig): number {
  return typeof config.classifier_dropout === "number"
    ? config.classifier_dropout
    : config.hidden_dropout_prob;
}

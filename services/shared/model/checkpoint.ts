/**
 * Checkpoints in the Hugging Face BERT layout: which tensors each head has (with HF names and shapes), seeded
 * initialisation as HF `BertPreTrainedModel._init_weights` does it, and model folders
 * (`config.json`, `model.safetensors`, `vocab.txt`, `tokenizer.json`, `tokenizer_config.json`) read and written
 * atomically.
 *
 * Heads map to HF classes: pretrain → BertForPreTraining (MLM transform + decoder tied to the word embeddings,
 * NSP on the pooler), classify/pair/multilabel → BertForSequenceClassification, ner →
 * BertForTokenClassification (no pooler, as HF builds it) plus the pytorch-crf tensors `crf.*` when `crf`, qa →
 * BertForQuestionAnswering (no pooler; `qa_outputs` (2, C): a start and an end logit per token).
 *
 * Letters: V vocab, C hidden, F intermediate, L layers, K labels, P max positions, TV token types.
 */
import { join } from "@std/path";
import { InvalidArgument, NotFound } from "../errors.ts";
import {
  type HeadSpec,
  headUsesPooler,
  type NamedTensor,
  type TaskKind,
  validateHead,
  type Weights,
} from "../engine/engine.ts";
import { type BertConfig, FINAL_LAYER_NORM, isPreLayerNorm, parseConfig } from "./config.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";

/** Tensors that HF ties to others and drops from safetensors; accepted on load, never written. */
export const TIED_TENSORS: Record<string, string> = {
  "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
  "cls.predictions.decoder.bias": "cls.predictions.bias",
};

/** How a tensor is initialised (HF `_init_weights`): normal(0, initializer_range), zeros or ones. */
export type InitKind = "normal" | "zeros" | "ones";

export interface TensorSpec {
  shape: number[];
  init: InitKind;
}

/**
 * Encoder tensors (embeddings + L layers), HF names → shapes. A pre-LN config (`bertforge_layer_norm: "pre"`)
 * has the same per-layer tensors, with LN1/LN2 meaning, plus the final `bert.encoder.LayerNorm`: HF's BertModel
 * has no such tensor and cannot run that model (config.ts, LayerNormPlacement).
 */
export function encoderTensors(config: BertConfig): Map<string, TensorSpec> {
  const V = config.vocab_size, C = config.hidden_size, F = config.intermediate_size;
  const P = config.max_position_embeddings, TV = config.type_vocab_size;
  const specs = new Map<string, TensorSpec>();
  const linear = (prefix: string, outDim: number, inDim: number) => {
    specs.set(`${prefix}.weight`, { shape: [outDim, inDim], init: "normal" }); // torch.nn.Linear: [out, in]
    specs.set(`${prefix}.bias`, { shape: [outDim], init: "zeros" });
  };
  const layerNorm = (prefix: string) => {
    specs.set(`${prefix}.weight`, { shape: [C], init: "ones" });
    specs.set(`${prefix}.bias`, { shape: [C], init: "zeros" });
  };
  specs.set("bert.embeddings.word_embeddings.weight", { shape: [V, C], init: "normal" });
  specs.set("bert.embeddings.position_embeddings.weight", { shape: [P, C], init: "normal" });
  specs.set("bert.embeddings.token_type_embeddings.weight", { shape: [TV, C], init: "normal" });
  layerNorm("bert.embeddings.LayerNorm");
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `bert.encoder.layer.${l}`;
    linear(`${p}.attention.self.query`, C, C);
    linear(`${p}.attention.self.key`, C, C);
    linear(`${p}.attention.self.value`, C, C);
    linear(`${p}.attention.output.dense`, C, C);
    layerNorm(`${p}.attention.output.LayerNorm`);
    linear(`${p}.intermediate.dense`, F, C);
    linear(`${p}.output.dense`, C, F);
    layerNorm(`${p}.output.LayerNorm`);
  }
  if (isPreLayerNorm(config)) layerNorm(FINAL_LAYER_NORM);
  return specs;
}

/** Tensors on top of the encoder for one head (pooler included where the HF class has one). */
export function headTensors(config: BertConfig, head: HeadSpec): Map<string, TensorSpec> {
  const C = config.hidden_size, V = config.vocab_size;
  const K = validateHead(head).numLabels ?? 0;
  const specs = new Map<string, TensorSpec>();
  const pooler = () => {
    specs.set("bert.pooler.dense.weight", { shape: [C, C], init: "normal" });
    specs.set("bert.pooler.dense.bias", { shape: [C], init: "zeros" });
  };
  if (head.task === "pretrain") {
    pooler();
    specs.set("cls.predictions.transform.dense.weight", { shape: [C, C], init: "normal" });
    specs.set("cls.predictions.transform.dense.bias", { shape: [C], init: "zeros" });
    specs.set("cls.predictions.transform.LayerNorm.weight", { shape: [C], init: "ones" });
    specs.set("cls.predictions.transform.LayerNorm.bias", { shape: [C], init: "zeros" });
    specs.set("cls.predictions.bias", { shape: [V], init: "zeros" });
    specs.set("cls.seq_relationship.weight", { shape: [2, C], init: "normal" });
    specs.set("cls.seq_relationship.bias", { shape: [2], init: "zeros" });
    return specs;
  }
  if (head.task === "qa") {
    specs.set("qa_outputs.weight", { shape: [2, C], init: "normal" });
    specs.set("qa_outputs.bias", { shape: [2], init: "zeros" });
    return specs;
  }
  if (headUsesPooler(head)) pooler();
  specs.set("classifier.weight", { shape: [K, C], init: "normal" });
  specs.set("classifier.bias", { shape: [K], init: "zeros" });
  if (head.task === "ner" && head.crf) {
    // pytorch-crf names: start/end scores per tag and transitions[from, to].
    specs.set("crf.start_transitions", { shape: [K], init: "normal" });
    specs.set("crf.end_transitions", { shape: [K], init: "normal" });
    specs.set("crf.transitions", { shape: [K, K], init: "normal" });
  }
  return specs;
}

/** Every tensor a model with this head has: HF name → shape, in a stable order (encoder first). */
export function expectedTensors(config: BertConfig, head: HeadSpec): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [name, spec] of [...encoderTensors(config), ...headTensors(config, head)]) {
    out.set(name, spec.shape);
  }
  return out;
}

/** Deterministic PRNG (mulberry32) so the same seed gives the same weights on every backend and machine. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `out` with normal(0, std) draws (Box-Muller on a seeded uniform source). */
export function fillNormal(out: Float32Array, std: number, uniform: () => number): void {
  for (let i = 0; i < out.length; i += 2) {
    const u1 = 1 - uniform(); // (0, 1]: log stays finite
    const u2 = uniform();
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
}

function initTensor(name: string, spec: TensorSpec, config: BertConfig, seed: number): NamedTensor {
  const data = new Float32Array(spec.shape.reduce((a, b) => a * b, 1));
  if (spec.init === "ones") data.fill(1);
  if (spec.init === "normal") {
    // One stream per tensor (seed mixed with the name), so adding a head never changes the encoder's draws.
    fillNormal(data, config.initializer_range, mulberry32(seed ^ hashName(name)));
    if (name === "bert.embeddings.word_embeddings.weight") {
      // HF zeroes the padding_idx row of the word embeddings.
      const C = config.hidden_size, pad = config.pad_token_id;
      if (pad >= 0 && pad < config.vocab_size) data.fill(0, pad * C, (pad + 1) * C);
    }
  }
  return { shape: [...spec.shape], data };
}

function hashName(name: string): number {
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Fresh weights for a model with this head: normal(0, initializer_range) matrices, zero biases, unit LayerNorm. */
export function initWeights(config: BertConfig, head: HeadSpec, seed = 0): Weights {
  const weights: Weights = new Map();
  for (const [name, spec] of [...encoderTensors(config), ...headTensors(config, head)]) {
    weights.set(name, initTensor(name, spec, config, seed));
  }
  return weights;
}

/**
 * HF names from the variants found in the wild: TF-era `LayerNorm.gamma/beta`, checkpoints saved from a bare
 * `BertModel` (no `bert.` prefix). Tied decoder tensors are dropped (the engines tie them to their sources).
 */
export function canonicalName(name: string): string {
  let n = name.replace(/LayerNorm\.gamma$/, "LayerNorm.weight").replace(/LayerNorm\.beta$/, "LayerNorm.bias");
  if (/^(embeddings|encoder|pooler)\./.test(n)) n = `bert.${n}`;
  return n;
}

export interface AdaptResult {
  weights: Weights;
  /** Tensors of the head that were not in the checkpoint and were freshly initialised. */
  initialized: string[];
  /** Tensors of the checkpoint that this head does not use (another head's, tied duplicates). */
  dropped: string[];
}

/**
 * Fits loaded weights to (config, head): encoder tensors must all be present with the expected shapes (else one
 * InvalidArgument naming every missing or mismatched tensor); head tensors that are missing or shaped for a
 * different label count are initialised from `seed`; unknown tensors are dropped and reported.
 */
export function adaptWeights(loaded: Weights, config: BertConfig, head: HeadSpec, seed = 0): AdaptResult {
  const canonical: Weights = new Map();
  for (const [name, t] of loaded) canonical.set(canonicalName(name), t);
  const problems: string[] = [];
  const weights: Weights = new Map();
  const initialized: string[] = [];
  const encoder = encoderTensors(config);
  const heads = headTensors(config, head);
  for (const [name, spec] of encoder) {
    const t = canonical.get(name);
    if (!t) problems.push(`missing '${name}' ${JSON.stringify(spec.shape)}`);
    else if (!sameShape(t.shape, spec.shape)) {
      problems.push(`'${name}' has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(spec.shape)}`);
    } else weights.set(name, t);
  }
  if (problems.length) {
    throw new InvalidArgument(`checkpoint does not fit the config: ${problems.join("; ")}`);
  }
  for (const [name, spec] of heads) {
    const t = canonical.get(name);
    if (t && sameShape(t.shape, spec.shape)) weights.set(name, t);
    else {
      weights.set(name, initTensor(name, spec, config, seed));
      initialized.push(name);
    }
  }
  const dropped = [...canonical.keys()].filter((n) => !weights.has(n));
  return { weights, initialized, dropped };
}

/**
 * Strict check for engines' setWeights: exactly the expected tensors with the expected shapes (tied decoder
 * tensors tolerated). With `allowMissingHead`, head tensors may be absent. Throws one InvalidArgument listing
 * every problem.
 */
export function checkWeights(
  weights: Weights,
  config: BertConfig,
  head: HeadSpec,
  options: { allowMissingHead?: boolean } = {},
): void {
  const encoder = encoderTensors(config);
  const heads = headTensors(config, head);
  const problems: string[] = [];
  for (const [name, spec] of [...encoder, ...heads]) {
    const t = weights.get(name);
    if (!t) {
      if (!(options.allowMissingHead && heads.has(name))) {
        problems.push(`missing '${name}' ${JSON.stringify(spec.shape)}`);
      }
    } else if (!sameShape(t.shape, spec.shape)) {
      problems.push(`'${name}' has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(spec.shape)}`);
    } else if (t.data.length !== spec.shape.reduce((a, b) => a * b, 1)) {
      problems.push(`'${name}' has ${t.data.length} values for shape ${JSON.stringify(spec.shape)}`);
    }
  }
  for (const name of weights.keys()) {
    if (!encoder.has(name) && !heads.has(name) && !(name in TIED_TENSORS)) {
      problems.push(`unexpected '${name}'`);
    }
  }
  if (problems.length) throw new InvalidArgument(`weights do not fit the model: ${problems.join("; ")}`);
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** The HF architecture class for a head, written into config.json `architectures`. */
export function architectureFor(head: HeadSpec): string {
  switch (head.task) {
    case "pretrain":
      return "BertForPreTraining";
    case "ner":
      return "BertForTokenClassification";
    case "qa":
      return "BertForQuestionAnswering";
    default:
      return "BertForSequenceClassification";
  }
}

/**
 * The head a config.json describes (from `architectures`, `id2label`, `problem_type` and our own
 * `bertforge_task`/`bertforge_crf`/`bertforge_pooling` keys), or undefined for a bare encoder / masked-LM checkpoint.
 */
export function headFromConfig(config: BertConfig): HeadSpec | undefined {
  const task = config.bertforge_task as TaskKind | undefined;
  const K = config.id2label ? Object.keys(config.id2label).length : undefined;
  const withLabels = (t: TaskKind): HeadSpec => ({
    task: t,
    ...(K !== undefined ? { numLabels: K } : {}),
    ...(t === "ner" && config.bertforge_crf ? { crf: true } : {}),
    ...(t !== "ner" && config.bertforge_pooling === "mean" ? { pooling: "mean" as const } : {}),
  });
  if (task) return task === "pretrain" || task === "qa" ? { task } : withLabels(task);
  const arch = config.architectures?.[0];
  if (arch === "BertForPreTraining") return { task: "pretrain" };
  if (arch === "BertForQuestionAnswering") return { task: "qa" };
  if (arch === "BertForTokenClassification") return withLabels("ner");
  if (arch === "BertForSequenceClassification") {
    return withLabels(config.problem_type === "multi_label_classification" ? "multilabel" : "classify");
  }
  return undefined;
}

/** config.json contents for a head: architectures, id2label/label2id (default LABEL_i), problem_type. */
export function configForHead(config: BertConfig, head: HeadSpec, labels?: string[]): BertConfig {
  const out: BertConfig = {
    ...config,
    architectures: [architectureFor(head)],
    model_type: "bert",
    bertforge_task: head.task,
  };
  // no labels: pretraining predicts tokens, qa positions (HF's default num_labels 2 is what qa_outputs has)
  if (head.task === "pretrain" || head.task === "qa") {
    delete out.id2label;
    delete out.label2id;
    delete out.problem_type;
    delete out.bertforge_crf;
    delete out.bertforge_pooling;
    return out;
  }
  const K = head.numLabels ?? labels?.length ?? 0;
  const names = labels ?? Array.from({ length: K }, (_, i) => config.id2label?.[String(i)] ?? `LABEL_${i}`);
  if (names.length !== K) {
    throw new InvalidArgument(`labels has ${names.length} names but head numLabels is ${K}`);
  }
  out.id2label = Object.fromEntries(names.map((n, i) => [String(i), n]));
  out.label2id = Object.fromEntries(names.map((n, i) => [n, i]));
  if (head.task === "multilabel") out.problem_type = "multi_label_classification";
  else if (head.task === "classify" || head.task === "pair") out.problem_type = "single_label_classification";
  else delete out.problem_type;
  if (head.task === "ner" && head.crf) out.bertforge_crf = true;
  else delete out.bertforge_crf;
  // HF's BertForSequenceClassification always reads the pooler: a mean-pooling model loads there with a fresh,
  // untrained pooler (transformers warns "newly initialized"), never silently with a wrong one.
  if (head.pooling === "mean") out.bertforge_pooling = "mean";
  else delete out.bertforge_pooling;
  return out;
}

export interface ModelDir {
  config: BertConfig;
  /** The head the config describes, if any (see headFromConfig). */
  head?: HeadSpec;
  weights: Weights;
  vocabText: string;
  tokenizerJson?: string;
  tokenizerConfigJson?: string;
  metadata: Record<string, string>;
}

async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/**
 * Reads an HF model folder. Weights come from model.safetensors with canonical names (gamma/beta renamed, a
 * missing `bert.` prefix added, tied decoder copies dropped). A folder without config.json or weights is a
 * NotFound naming the file. With `options.head` the weights are fitted to that head (adaptWeights: encoder
 * required, head tensors initialised from `seed` when absent, others dropped and listed).
 */
export async function loadModelDir(
  dir: string,
  options: { head?: HeadSpec; seed?: number } = {},
): Promise<ModelDir & { initialized?: string[]; dropped?: string[] }> {
  const configText = await readTextIfExists(join(dir, "config.json"));
  if (configText === undefined) throw new NotFound(`model folder ${dir} has no config.json`);
  const config = parseConfig(configText);
  const safetensorsPath = join(dir, "model.safetensors");
  try {
    await Deno.stat(safetensorsPath);
  } catch {
    const hasBin = await Deno.stat(join(dir, "pytorch_model.bin")).then(() => true, () => false);
    throw new NotFound(
      `model folder ${dir} has no model.safetensors` +
        (hasBin ? " (pytorch_model.bin is not read: convert it to safetensors first)" : ""),
    );
  }
  const { weights: raw, metadata } = await readSafetensors(safetensorsPath);
  const weights: Weights = new Map();
  for (const [name, t] of raw) {
    const canonical = canonicalName(name);
    if (canonical in TIED_TENSORS) continue;
    weights.set(canonical, t);
  }
  const vocabText = await readTextIfExists(join(dir, "vocab.txt"));
  if (vocabText === undefined) throw new NotFound(`model folder ${dir} has no vocab.txt`);
  const out: ModelDir & { initialized?: string[]; dropped?: string[] } = {
    config,
    weights,
    vocabText,
    metadata,
  };
  const head = options.head ?? headFromConfig(config);
  if (head) out.head = head;
  if (options.head) {
    // Loading for a (possibly different) head: keep the encoder, initialise what the head lacks.
    const adapted = adaptWeights(weights, config, options.head, options.seed ?? 0);
    out.weights = adapted.weights;
    out.initialized = adapted.initialized;
    out.dropped = adapted.dropped;
  }
  const tokenizerJson = await readTextIfExists(join(dir, "tokenizer.json"));
  if (tokenizerJson !== undefined) out.tokenizerJson = tokenizerJson;
  const tokenizerConfigJson = await readTextIfExists(join(dir, "tokenizer_config.json"));
  if (tokenizerConfigJson !== undefined) out.tokenizerConfigJson = tokenizerConfigJson;
  return out;
}

export interface SaveModelOptions {
  config: BertConfig;
  /** When given, config.json gets architectures/id2label/label2id for it (see configForHead). */
  head?: HeadSpec;
  labels?: string[];
  weights: Weights;
  vocabText: string;
  tokenizerJson?: string;
  /** tokenizer_config.json; a BertTokenizer one is written when absent. */
  tokenizerConfig?: Record<string, unknown>;
  /** Written into the safetensors `__metadata__` (HF expects `format: pt`, always set). */
  metadata?: Record<string, string>;
  /** More files (relative name → contents), e.g. lineage.json. */
  extraFiles?: Record<string, string | Uint8Array>;
}

/**
 * Writes an HF model folder atomically: everything goes to a sibling temp folder which is then renamed over
 * `dir`, so a reader sees either the old folder or the complete new one. Returns the config written.
 */
export async function saveModelDir(dir: string, options: SaveModelOptions): Promise<BertConfig> {
  const config = options.head
    ? configForHead(options.config, options.head, options.labels)
    : { ...options.config };
  for (const [name, t] of options.weights) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== n) {
      throw new InvalidArgument(
        `weights '${name}' has ${t.data.length} values but shape ${JSON.stringify(t.shape)} needs ${n}`,
      );
    }
  }
  const parent = join(dir, "..");
  await Deno.mkdir(parent, { recursive: true });
  const base = dir.replace(/\/+$/, "").split("/").pop()!;
  const temp = join(parent, `.${base}.tmp-${crypto.randomUUID().slice(0, 8)}`);
  await Deno.mkdir(temp);
  try {
    await Deno.writeTextFile(join(temp, "config.json"), JSON.stringify(config, null, 2) + "\n");
    await writeSafetensors(join(temp, "model.safetensors"), options.weights, {
      format: "pt",
      ...options.metadata,
    });
    await Deno.writeTextFile(join(temp, "vocab.txt"), options.vocabText);
    if (options.tokenizerJson !== undefined) {
      await Deno.writeTextFile(join(temp, "tokenizer.json"), options.tokenizerJson);
    }
    const tokenizerConfig = options.tokenizerConfig ?? {
      tokenizer_class: "BertTokenizer",
      do_lower_case: true,
      model_max_length: config.max_position_embeddings,
      unk_token: "[UNK]",
      sep_token: "[SEP]",
      pad_token: "[PAD]",
      cls_token: "[CLS]",
      mask_token: "[MASK]",
    };
    await Deno.writeTextFile(
      join(temp, "tokenizer_config.json"),
      JSON.stringify(tokenizerConfig, null, 2) + "\n",
    );
    for (const [name, contents] of Object.entries(options.extraFiles ?? {})) {
      if (name.includes("..") || name.startsWith("/")) {
        throw new InvalidArgument(
          `extraFiles name '${name}' must be a relative path inside the model folder`,
        );
      }
      const path = join(temp, name);
      await Deno.mkdir(join(path, ".."), { recursive: true });
      if (typeof contents === "string") await Deno.writeTextFile(path, contents);
      else await Deno.writeFile(path, contents);
    }
    // rename() cannot replace a non-empty folder: move the old one aside first, then drop it.
    let old: string | undefined;
    try {
      await Deno.stat(dir);
      old = join(parent, `.${base}.old-${crypto.randomUUID().slice(0, 8)}`);
      await Deno.rename(dir, old);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    await Deno.rename(temp, dir);
    if (old) await Deno.remove(old, { recursive: true });
  } catch (e) {
    await Deno.remove(temp, { recursive: true }).catch(() => {});
    throw e;
  }
  return config;
}

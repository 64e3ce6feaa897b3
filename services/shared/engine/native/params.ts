/**
 * The parameter map of the native engine: which Hugging Face tensors a (config, head) has, where each sits in
 * the one parameter arena, whether AdamW decays it, and how it is initialised.
 *
 * Layout: every decayed tensor first, then every excluded one (biases, LayerNorm weights), so AdamW is two
 * calls over two contiguous ranges. Within a group the order of `paramSpecs` is kept, which puts the query,
 * key and value weights of a layer side by side: one fused (3C, C) QKV GEMM with no copies.
 */
import { type BertConfig, FINAL_LAYER_NORM, isPreLayerNorm } from "../../model/config.ts";
import { type HeadSpec, headUsesPooler } from "../engine.ts";

export type InitKind = "normal" | "zeros" | "ones" | "crf";

export interface ParamSpec {
  name: string;
  shape: number[];
  size: number;
  decay: boolean;
  init: InitKind;
  /** element offset in the parameter arena */
  offset: number;
  /** part of a head (pooler, cls.*, classifier, crf): may be absent from a checkpoint with allowMissingHead */
  head: boolean;
}

/** HF's rule (run_pretraining / Trainer): no weight decay for biases and LayerNorm weights. */
export function decays(name: string): boolean {
  return !(name.includes("bias") || name.includes("LayerNorm.weight"));
}

export function paramSpecs(config: BertConfig, head: HeadSpec): ParamSpec[] {
  const C = config.hidden_size, F = config.intermediate_size, V = config.vocab_size;
  const list: Array<[string, number[], InitKind, boolean]> = [];
  const linear = (prefix: string, out: number, inp: number, isHead = false) => {
    list.push([`${prefix}.weight`, [out, inp], "normal", isHead], [`${prefix}.bias`, [out], "zeros", isHead]);
  };
  const layerNorm = (prefix: string, isHead = false) => {
    list.push([`${prefix}.weight`, [C], "ones", isHead], [`${prefix}.bias`, [C], "zeros", isHead]);
  };
  list.push(
    ["bert.embeddings.word_embeddings.weight", [V, C], "normal", false],
    ["bert.embeddings.position_embeddings.weight", [config.max_position_embeddings, C], "normal", false],
    ["bert.embeddings.token_type_embeddings.weight", [config.type_vocab_size, C], "normal", false],
  );
  layerNorm("bert.embeddings.LayerNorm");
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `bert.encoder.layer.${l}`;
    // query, key, value weights then biases adjacent: the fused QKV views depend on it
    list.push(
      [`${p}.attention.self.query.weight`, [C, C], "normal", false],
      [`${p}.attention.self.key.weight`, [C, C], "normal", false],
      [`${p}.attention.self.value.weight`, [C, C], "normal", false],
      [`${p}.attention.self.query.bias`, [C], "zeros", false],
      [`${p}.attention.self.key.bias`, [C], "zeros", false],
      [`${p}.attention.self.value.bias`, [C], "zeros", false],
    );
    linear(`${p}.attention.output.dense`, C, C);
    layerNorm(`${p}.attention.output.LayerNorm`);
    linear(`${p}.intermediate.dense`, F, C);
    linear(`${p}.output.dense`, C, F);
    layerNorm(`${p}.output.LayerNorm`);
  }
  // pre-LN: the per-layer LayerNorms above are LN1/LN2 on the branch inputs, and one more normalises X[L]
  if (isPreLayerNorm(config)) layerNorm(FINAL_LAYER_NORM);
  if (headUsesPooler(head)) linear("bert.pooler.dense", C, C, true);
  if (head.task === "pretrain") {
    linear("cls.predictions.transform.dense", C, C, true);
    layerNorm("cls.predictions.transform.LayerNorm", true);
    list.push(["cls.predictions.bias", [V], "zeros", true]);
    linear("cls.seq_relationship", 2, C, true);
  } else if (head.task === "qa") {
    linear("qa_outputs", 2, C, true); // start and end logit per token (HF BertForQuestionAnswering)
  } else {
    const K = head.numLabels ?? 0;
    linear("classifier", K, C, true);
    if (head.task === "ner" && head.crf) {
      list.push(
        ["crf.transitions", [K, K], "crf", true],
        ["crf.start_transitions", [K], "crf", true],
        ["crf.end_transitions", [K], "crf", true],
      );
    }
  }
  const specs: ParamSpec[] = list.map(([name, shape, init, head]) => ({
    name,
    shape,
    size: shape.reduce((a, b) => a * b, 1),
    decay: decays(name),
    init,
    offset: 0,
    head,
  }));
  let offset = 0;
  for (const group of [true, false]) {
    for (const s of specs) {
      if (s.decay !== group) continue;
      s.offset = offset;
      offset += s.size;
    }
  }
  return specs;
}

/** Tensors of the other BERT heads and HF buffers: accepted and ignored by setWeights (not "unexpected"). */
export function isIgnorableName(name: string): boolean {
  return name.startsWith("cls.") || name.startsWith("bert.pooler.") || name.startsWith("classifier.") ||
    name.startsWith("crf.") || name.startsWith("qa_outputs.") || name.endsWith(".position_ids") ||
    name === "cls.predictions.decoder.weight" ||
    name === "cls.predictions.decoder.bias";
}

/** Maps legacy spellings (TF-converted `gamma`/`beta`, BertModel without the `bert.` prefix) to HF names. */
export function canonicalName(name: string): string {
  let n = name.replace(/LayerNorm\.gamma$/, "LayerNorm.weight").replace(/LayerNorm\.beta$/, "LayerNorm.bias");
  if (n.startsWith("embeddings.") || n.startsWith("encoder.") || n.startsWith("pooler.")) n = `bert.${n}`;
  // the decoder bias is tied to cls.predictions.bias; some exports carry only the decoder's name
  if (n === "cls.predictions.decoder.bias") n = "cls.predictions.bias";
  return n;
}

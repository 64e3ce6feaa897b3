/**
 * BERT in TensorFlow.js ops: post-LN encoder as in Devlin et al. 2019 and HF `BertModel`, or pre-LN with config
 * `bertforge_layer_norm: "pre"` (model/config.ts LayerNormPlacement), plus the heads and their losses. Pure functions of (parameters, inputs); the engine (mod.ts) owns variables, gradients and the
 * optimizer. Every function here runs inside a tf.tidy of the caller.
 *
 * Letters: B batch, T sequence length, C hidden, NH heads, HS head size (C/NH), F intermediate, V vocab,
 * K labels, M masked positions, N = B*T.
 */
import type * as tfTypes from "@tensorflow/tfjs-core";
import { type BertConfig, FINAL_LAYER_NORM, isPreLayerNorm } from "../../model/config.ts";
import type { Batch, HeadSpec } from "../engine.ts";
import { IGNORE_INDEX } from "../../model/batch.ts";

type Tf = typeof tfTypes;
type Tensor = tfTypes.Tensor;
type Tensor1D = tfTypes.Tensor1D;
type Tensor2D = tfTypes.Tensor2D;

/** Parameters by HF name. */
export type Params = (name: string) => Tensor;

export interface RunContext {
  tf: Tf;
  config: BertConfig;
  params: Params;
  /** Dropout (seeded by the engine); identity when not training. */
  dropout: (x: Tensor, rate: number) => Tensor;
}

/** x (N, in) · W^T + b with W stored [out, in] like torch.nn.Linear → (N, out). */
function linear(ctx: RunContext, x: Tensor2D, prefix: string): Tensor2D {
  const { tf, params } = ctx;
  return tf.add(tf.matMul(x, params(`${prefix}.weight`) as Tensor2D, false, true), params(`${prefix}.bias`));
}

/** LayerNorm over the last axis with the biased variance, as torch does. */
function layerNorm(ctx: RunContext, x: Tensor2D, prefix: string): Tensor2D {
  const { tf, params } = ctx;
  const { mean, variance } = tf.moments(x, -1, true);
  const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, ctx.config.layer_norm_eps)));
  return tf.add(tf.mul(normed, params(`${prefix}.weight`)), params(`${prefix}.bias`));
}

/** Exact GELU: x · Φ(x) = 0.5 x (1 + erf(x / √2)). */
function gelu(tf: Tf, x: Tensor2D): Tensor2D {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
}

/**
 * Row lookup table[ids] whose gradient is a scatter-add. tf.gather's own gradient needs UnsortedSegmentSum, which
 * the wasm backend lacks; ScatterNd (which sums duplicate indices) it has.
 */
export function gatherRows(tf: Tf, table: Tensor2D, ids: Int32Array): Tensor2D {
  if (tf.getBackend() !== "wasm") return tf.gather(table, tf.tensor1d(ids, "int32")) as Tensor2D;
  const indices = tf.tensor2d(ids, [ids.length, 1], "int32"); // (n, 1)
  const shape = table.shape;
  // The indices go through save(): tensors merely captured would be gone when the tape runs backward.
  const lookup = tf.customGrad(
    ((rows: Tensor, idx: Tensor, save: tfTypes.GradSaveFunc) => {
      save([idx]);
      return {
        value: tf.gather(rows, tf.reshape(idx, [ids.length])),
        gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]) => [
          tf.scatterND(saved[0]!, dy as Tensor, shape),
          tf.zerosLike(saved[0]!),
        ],
      };
    }) as unknown as Parameters<Tf["customGrad"]>[0],
  );
  return lookup(table, indices) as Tensor2D;
}

/**
 * Word embedding lookup with HF's padding_idx semantics: the [PAD] row is used in the forward pass but gets no
 * gradient from the lookup (it still gets one through the tied MLM decoder), so at [PAD] positions the row is
 * read as a constant.
 */
function wordEmbeddings(ctx: RunContext, ids: Int32Array): Tensor2D {
  const { tf, params, config } = ctx;
  const table = params("bert.embeddings.word_embeddings.weight") as Tensor2D; // (V, C)
  const pad = config.pad_token_id;
  const looked = gatherRows(tf, table, ids); // (N, C)
  if (!(pad >= 0 && pad < config.vocab_size) || !ids.includes(pad)) return looked;
  const C = config.hidden_size;
  const isPad = tf.tensor2d(Float32Array.from(ids, (id) => (id === pad ? 1 : 0)), [ids.length, 1]);
  const padRow = tf.tensor2d(tf.slice(table, [pad, 0], [1, C]).dataSync() as Float32Array, [1, C]); // constant
  return tf.add(tf.mul(looked, tf.sub(1, isPad)), tf.mul(padRow, isPad));
}

export interface EncoderOutput {
  hidden: Tensor2D; // (N, C) the last layer's output (after the final LayerNorm for pre-LN): what the heads read
  pooled?: Tensor2D; // (B, C): the pooler's output, or the masked mean for a mean-pooling head; none for ner
}

/** Embeddings + L transformer layers (+ the sentence vector the head reads, see HeadSpec.pooling). */
export function encode(ctx: RunContext, batch: Batch, head: HeadSpec): EncoderOutput {
  const { tf, params, config } = ctx;
  const { B, T } = batch;
  const C = config.hidden_size, NH = config.num_attention_heads, HS = C / NH, N = B * T;
  const positions = new Int32Array(N);
  for (let i = 0; i < N; i++) positions[i] = i % T;
  const words = wordEmbeddings(ctx, batch.inputIds); // (N, C)
  const pos = gatherRows(tf, params("bert.embeddings.position_embeddings.weight") as Tensor2D, positions);
  const types = gatherRows(
    tf,
    params("bert.embeddings.token_type_embeddings.weight") as Tensor2D,
    batch.tokenTypeIds,
  );
  let x = layerNorm(ctx, tf.addN([words, pos, types]) as Tensor2D, "bert.embeddings.LayerNorm"); // (N, C)
  x = ctx.dropout(x, config.hidden_dropout_prob) as Tensor2D;

  // Padding keys get -10000 added to their scores (BERT's additive mask): (B, 1, 1, T).
  const maskAdd = tf.mul(
    tf.sub(1, tf.tensor4d(Float32Array.from(batch.attentionMask), [B, 1, 1, T])),
    -10000,
  );
  const scale = 1 / Math.sqrt(HS);
  const heads = (t: Tensor2D) => tf.transpose(tf.reshape(t, [B, T, NH, HS]), [0, 2, 1, 3]); // (B, NH, T, HS)
  // Self-attention then output projection and dropout: the branch that joins the residual stream. (N, C)
  const attention = (inp: Tensor2D, p: string): Tensor2D => {
    const q = heads(linear(ctx, inp, `${p}.attention.self.query`));
    const k = heads(linear(ctx, inp, `${p}.attention.self.key`));
    const v = heads(linear(ctx, inp, `${p}.attention.self.value`));
    const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), scale), maskAdd); // (B, NH, T, T)
    const probs = ctx.dropout(tf.softmax(scores), config.attention_probs_dropout_prob);
    const context = tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [N, C]) as Tensor2D; // (N, C)
    return ctx.dropout(
      linear(ctx, context, `${p}.attention.output.dense`),
      config.hidden_dropout_prob,
    ) as Tensor2D;
  };
  // GELU MLP then dropout: the other branch. (N, C)
  const ffn = (inp: Tensor2D, p: string): Tensor2D => {
    const inner = gelu(tf, linear(ctx, inp, `${p}.intermediate.dense`)); // (N, F)
    return ctx.dropout(linear(ctx, inner, `${p}.output.dense`), config.hidden_dropout_prob) as Tensor2D;
  };
  const preLN = isPreLayerNorm(config);
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `bert.encoder.layer.${l}`;
    if (preLN) {
      // x = x + Attn(LN1(x)); x = x + FFN(LN2(x))
      x = tf.add(x, attention(layerNorm(ctx, x, `${p}.attention.output.LayerNorm`), p)) as Tensor2D;
      x = tf.add(x, ffn(layerNorm(ctx, x, `${p}.output.LayerNorm`), p)) as Tensor2D;
    } else {
      const h = layerNorm(ctx, tf.add(attention(x, p), x) as Tensor2D, `${p}.attention.output.LayerNorm`);
      x = layerNorm(ctx, tf.add(ffn(h, p), h) as Tensor2D, `${p}.output.LayerNorm`);
    }
  }
  if (preLN) x = layerNorm(ctx, x, FINAL_LAYER_NORM);
  if (head.task === "ner" || head.task === "qa") return { hidden: x }; // HF builds both without a pooler
  if (head.pooling === "mean") {
    const mask = tf.tensor3d(Float32Array.from(batch.attentionMask), [B, T, 1]);
    const summed = tf.sum(tf.mul(tf.reshape(x, [B, T, C]), mask), 1); // (B, C)
    // max(count, 1): a fully padded row reads zeros instead of NaN
    return { hidden: x, pooled: tf.div(summed, tf.maximum(tf.sum(mask, 1), 1)) as Tensor2D };
  }
  const first = tf.reshape(tf.slice(tf.reshape(x, [B, T, C]), [0, 0, 0], [B, 1, C]), [B, C]) as Tensor2D; // (B, C)
  return { hidden: x, pooled: tf.tanh(linear(ctx, first, "bert.pooler.dense")) };
}

/** MLM head on selected rows: transform (dense, GELU, LayerNorm), then decoder tied to the word embeddings. */
export function mlmLogits(ctx: RunContext, rows: Tensor2D): Tensor2D {
  const { tf, params } = ctx;
  const t = layerNorm(
    ctx,
    gelu(tf, linear(ctx, rows, "cls.predictions.transform.dense")),
    "cls.predictions.transform.LayerNorm",
  );
  const words = params("bert.embeddings.word_embeddings.weight") as Tensor2D; // (V, C)
  return tf.add(tf.matMul(t, words, false, true), params("cls.predictions.bias")); // (M, V)
}

/** Mean softmax cross-entropy of logits (M, K) against labels (M). */
export function crossEntropy(tf: Tf, logits: Tensor2D, labels: Int32Array): tfTypes.Scalar {
  const K = logits.shape[1];
  const picked = tf.sum(
    tf.mul(tf.logSoftmax(logits), tf.cast(tf.oneHot(tf.tensor1d(labels, "int32"), K), "float32")),
    1,
  );
  return tf.neg(tf.mean(picked));
}

/** Mean sigmoid binary cross-entropy with logits (B, K), written in the overflow-safe form. */
export function binaryCrossEntropy(tf: Tf, logits: Tensor2D, targets: Float32Array): tfTypes.Scalar {
  const z = tf.tensor2d(targets, logits.shape);
  const loss = tf.add(tf.sub(tf.relu(logits), tf.mul(logits, z)), tf.log1p(tf.exp(tf.neg(tf.abs(logits)))));
  return tf.mean(loss);
}

/** Row indices (into N = B*T) whose label is not the ignore index, and those labels. */
export function activeRows(labels: Int32Array): { rows: Int32Array; labels: Int32Array } {
  let n = 0;
  for (const l of labels) if (l !== IGNORE_INDEX) n++;
  const rows = new Int32Array(n), picked = new Int32Array(n);
  let j = 0;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] !== IGNORE_INDEX) (rows[j] = i), (picked[j++] = labels[i]!);
  }
  return { rows, labels: picked };
}

/** Penalty that rules a tag out at a labelled position (exp(-1e4) is 0 in float32, and stays differentiable). */
const RULED_OUT = -10000;

/**
 * log Z of a linear-chain CRF per sequence by the forward algorithm, over positions with `on` = 1 (a position
 * with 0 is skipped: alpha carries over unchanged). emissions (B, T, K); on (B, T). Returns (B).
 */
function crfLogPartition(ctx: RunContext, emissions: tfTypes.Tensor3D, on: Tensor2D): Tensor1D {
  const { tf, params } = ctx;
  const [B, T, K] = emissions.shape;
  const start = params("crf.start_transitions") as Tensor1D; // (K)
  const end = params("crf.end_transitions") as Tensor1D; // (K)
  const transitions = params("crf.transitions") as Tensor2D; // (K, K) [from, to]
  let alpha: Tensor = tf.add(tf.zeros([B, K]), start); // (B, K): log-sum of path scores ending in each tag
  let seen: Tensor = tf.zeros([B, 1]); // 1 once the row has passed a position on the chain
  for (let t = 0; t < T; t++) {
    const emit = tf.reshape(tf.slice(emissions, [0, t, 0], [B, 1, K]), [B, K]);
    const here = tf.slice(on, [0, t], [B, 1]); // (B, 1)
    // From the previous alphas through the transitions, or from the start scores (already in alpha) at the
    // row's first position.
    const through = tf.logSumExp(tf.add(tf.expandDims(alpha, 2), transitions), 1); // (B, K)
    const arrived = tf.add(tf.add(tf.mul(seen, through), tf.mul(tf.sub(1, seen), alpha)), emit);
    alpha = tf.add(tf.mul(here, arrived), tf.mul(tf.sub(1, here), alpha));
    seen = tf.maximum(seen, here);
  }
  return tf.logSumExp(tf.add(alpha, end), 1) as Tensor1D; // (B)
}

/**
 * CRF negative log-likelihood with latent unlabelled positions (see model/crf.ts), averaged over the batch.
 * emissions (B, T, K); attention (B, T) 0/1, the chain; tags (B, T) with -100 at unlabelled positions.
 */
export function crfLoss(
  ctx: RunContext,
  emissions: tfTypes.Tensor3D,
  attention: Float32Array,
  tags: Int32Array,
): tfTypes.Scalar {
  const { tf } = ctx;
  const [B, T, K] = emissions.shape;
  // Constrained emissions: at a labelled position every other tag is ruled out.
  const penalty = new Float32Array(B * T * K);
  for (let i = 0; i < B * T; i++) {
    const tag = tags[i]!;
    if (tag === IGNORE_INDEX) continue;
    for (let j = 0; j < K; j++) if (j !== tag) penalty[i * K + j] = RULED_OUT;
  }
  const on = tf.tensor2d(attention, [B, T]);
  const all = crfLogPartition(ctx, emissions, on);
  const agreeing = crfLogPartition(ctx, tf.add(emissions, tf.tensor3d(penalty, [B, T, K])), on);
  return tf.mean(tf.sub(all, agreeing));
}

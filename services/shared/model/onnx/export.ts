/**
 * ONNX export of a bertforge model (`model.onnx`), written by hand in the protobuf wire format (protobuf.ts):
 * opset 14, inputs `input_ids`, `attention_mask`, `token_type_ids` (int64, dynamic `batch` × `sequence`), outputs
 * `logits` for the head (+ `nsp_logits` for pretraining), `last_hidden_state` and, where the model has a pooler,
 * `pooler_output`: the names ONNX Runtime users and transformers.js expect of an HF export.
 *
 * The graph is the same BERT as the engines, post-LN or pre-LN (config `bertforge_layer_norm`, with the final
 * `bert.encoder.LayerNorm` before `last_hidden_state`; ONNX Runtime runs either, transformers' BertModel only post-LN): LayerNorm is spelled out in ReduceMean/Sub/Div (the
 * LayerNormalization op needs opset 17), GELU is the exact erf form, padding keys get -10000 added. Linear
 * weights are stored transposed ([in, out]) so each projection is one MatMul; the MLM decoder reads the word
 * embeddings through a Transpose node that ONNX Runtime folds at load. A CRF head exports its emissions as
 * `logits`; Viterbi stays outside the graph (model/crf.ts).
 *
 * Letters: B batch, T sequence, C hidden, NH heads, HS head size, F intermediate, V vocab, K labels.
 */
import { InvalidArgument } from "../../errors.ts";
import type { HeadSpec, Weights } from "../../engine/engine.ts";
import { checkWeights } from "../checkpoint.ts";
import { type BertConfig, FINAL_LAYER_NORM, isPreLayerNorm } from "../config.ts";
import { Message } from "./protobuf.ts";

const OPSET = 14;
const IR_VERSION = 8;
const FLOAT = 1, INT64 = 7; // TensorProto.DataType
const ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_INTS = 7; // AttributeProto.AttributeType

type Attribute = { f: number } | { i: number } | { ints: number[] };

/** Nodes and initializers of one graph, with generated names for intermediate values. */
class GraphBuilder {
  readonly nodes: Message[] = [];
  readonly initializers: Message[] = [];
  private count = 0;
  private constants = new Map<string, string>();

  initializer(name: string, dims: number[], data: Float32Array | BigInt64Array): string {
    const tensor = new Message().packedInts(1, dims).int(2, data instanceof Float32Array ? FLOAT : INT64)
      .string(8, name);
    tensor.bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.initializers.push(tensor);
    return name;
  }

  /** A float scalar or int64 vector constant, shared by value. */
  floatScalar(value: number): string {
    const key = `f:${value}`;
    if (!this.constants.has(key)) {
      this.constants.set(
        key,
        this.initializer(`const_${this.constants.size}`, [], new Float32Array([value])),
      );
    }
    return this.constants.get(key)!;
  }

  ints(values: number[]): string {
    const key = `i:${values.join(",")}`;
    if (!this.constants.has(key)) {
      const data = BigInt64Array.from(values.map(BigInt));
      this.constants.set(key, this.initializer(`const_${this.constants.size}`, [values.length], data));
    }
    return this.constants.get(key)!;
  }

  node(op: string, inputs: string[], attributes: Record<string, Attribute> = {}, output?: string): string {
    const out = output ?? `${op.toLowerCase()}_${this.count++}`;
    const node = new Message();
    for (const input of inputs) node.string(1, input);
    node.string(2, out).string(3, `${out}_node`).string(4, op);
    for (const [name, value] of Object.entries(attributes)) {
      const attr = new Message().string(1, name);
      if ("f" in value) attr.float(2, value.f).int(20, ATTR_FLOAT);
      else if ("i" in value) attr.int(3, value.i).int(20, ATTR_INT);
      else {
        for (const v of value.ints) attr.int(8, v);
        attr.int(20, ATTR_INTS);
      }
      node.message(5, attr);
    }
    this.nodes.push(node);
    return out;
  }
}

/** [out, in] → [in, out], so x · W^T is MatMul(x, W_t). */
function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

function valueInfo(name: string, elemType: number, dims: Array<number | string>): Message {
  const shape = new Message();
  for (const d of dims) {
    shape.message(1, typeof d === "number" ? new Message().int(1, d) : new Message().string(2, d));
  }
  const tensorType = new Message().int(1, elemType).message(2, shape);
  return new Message().string(1, name).message(2, new Message().message(1, tensorType));
}

/** Builds the ONNX ModelProto for (config, head, weights). */
export function buildOnnxModel(config: BertConfig, head: HeadSpec, weights: Weights): Message {
  checkWeights(weights, config, head);
  const g = new GraphBuilder();
  const C = config.hidden_size, NH = config.num_attention_heads, HS = C / NH;
  const get = (name: string) => {
    const t = weights.get(name);
    if (!t) throw new InvalidArgument(`onnx export: weights have no '${name}'`);
    return t;
  };
  const param = (name: string) => g.initializer(name, get(name).shape, get(name).data);
  const linear = (x: string, prefix: string) => {
    const w = get(`${prefix}.weight`);
    const [outDim, inDim] = w.shape as [number, number];
    const wt = g.initializer(`${prefix}.weight_t`, [inDim, outDim], transpose(w.data, outDim, inDim));
    return g.node("Add", [g.node("MatMul", [x, wt]), param(`${prefix}.bias`)]);
  };
  const layerNorm = (x: string, prefix: string) => {
    const mean = g.node("ReduceMean", [x], { axes: { ints: [-1] }, keepdims: { i: 1 } });
    const centred = g.node("Sub", [x, mean]);
    const variance = g.node("ReduceMean", [g.node("Mul", [centred, centred])], {
      axes: { ints: [-1] },
      keepdims: { i: 1 },
    });
    const std = g.node("Sqrt", [g.node("Add", [variance, g.floatScalar(config.layer_norm_eps)])]);
    const normed = g.node("Div", [centred, std]);
    return g.node("Add", [g.node("Mul", [normed, param(`${prefix}.weight`)]), param(`${prefix}.bias`)]);
  };
  const gelu = (x: string) => {
    const erf = g.node("Erf", [g.node("Div", [x, g.floatScalar(Math.SQRT2)])]);
    return g.node("Mul", [g.node("Mul", [x, g.floatScalar(0.5)]), g.node("Add", [erf, g.floatScalar(1)])]);
  };

  // Embeddings: word + position (0..T-1) + token type, then LayerNorm. (B, T, C)
  const words = g.node("Gather", [param("bert.embeddings.word_embeddings.weight"), "input_ids"], {
    axis: { i: 0 },
  });
  const sequence = g.node("Slice", [g.node("Shape", ["input_ids"]), g.ints([1]), g.ints([2])]); // [T]
  const allPositions = g.initializer(
    "position_ids",
    [config.max_position_embeddings],
    BigInt64Array.from({ length: config.max_position_embeddings }, (_, i) => BigInt(i)),
  );
  const positionIds = g.node("Slice", [allPositions, g.ints([0]), sequence, g.ints([0])]); // (T)
  const positions = g.node("Gather", [param("bert.embeddings.position_embeddings.weight"), positionIds], {
    axis: { i: 0 },
  }); // (T, C), broadcast over B
  const types = g.node("Gather", [param("bert.embeddings.token_type_embeddings.weight"), "token_type_ids"], {
    axis: { i: 0 },
  });
  let x = layerNorm(g.node("Add", [g.node("Add", [words, positions]), types]), "bert.embeddings.LayerNorm");

  // Additive mask: (1 - mask) · -10000 as (B, 1, 1, T).
  const mask = g.node("Unsqueeze", [
    g.node("Cast", ["attention_mask"], { to: { i: FLOAT } }),
    g.ints([1, 2]),
  ]);
  const maskAdd = g.node("Mul", [g.node("Sub", [g.floatScalar(1), mask]), g.floatScalar(-10000)]);
  const splitHeads = g.ints([0, 0, NH, HS]); // Reshape: 0 copies B and T
  const mergeHeads = g.ints([0, 0, C]);
  const preLN = isPreLayerNorm(config);
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `bert.encoder.layer.${l}`;
    // pre-LN: attention and FFN read LN1(x) and LN2(x) and add onto the un-normalised stream
    const a = preLN ? layerNorm(x, `${p}.attention.output.LayerNorm`) : x;
    const heads = (prefix: string, perm: number[]) =>
      g.node("Transpose", [g.node("Reshape", [linear(a, prefix), splitHeads])], { perm: { ints: perm } });
    const q = heads(`${p}.attention.self.query`, [0, 2, 1, 3]); // (B, NH, T, HS)
    const kT = heads(`${p}.attention.self.key`, [0, 2, 3, 1]); // (B, NH, HS, T)
    const v = heads(`${p}.attention.self.value`, [0, 2, 1, 3]); // (B, NH, T, HS)
    const scores = g.node("Add", [
      g.node("Mul", [g.node("MatMul", [q, kT]), g.floatScalar(1 / Math.sqrt(HS))]),
      maskAdd,
    ]);
    const probs = g.node("Softmax", [scores], { axis: { i: -1 } }); // (B, NH, T, T)
    const context = g.node("Reshape", [
      g.node("Transpose", [g.node("MatMul", [probs, v])], { perm: { ints: [0, 2, 1, 3] } }),
      mergeHeads,
    ]); // (B, T, C)
    const attended = g.node("Add", [linear(context, `${p}.attention.output.dense`), x]);
    if (preLN) {
      const inner = gelu(linear(layerNorm(attended, `${p}.output.LayerNorm`), `${p}.intermediate.dense`)); // (B, T, F)
      x = g.node("Add", [linear(inner, `${p}.output.dense`), attended]);
      continue;
    }
    const h = layerNorm(attended, `${p}.attention.output.LayerNorm`);
    const inner = gelu(linear(h, `${p}.intermediate.dense`)); // (B, T, F)
    x = layerNorm(g.node("Add", [linear(inner, `${p}.output.dense`), h]), `${p}.output.LayerNorm`);
  }
  if (preLN) x = layerNorm(x, FINAL_LAYER_NORM);
  g.node("Identity", [x], {}, "last_hidden_state");

  const outputs: Message[] = [valueInfo("last_hidden_state", FLOAT, ["batch", "sequence", C])];
  let pooled: string | undefined;
  if (head.pooling === "mean") {
    // The engines' mean over real tokens; no pooler_output (the model has no pooler).
    const real = g.node("Unsqueeze", [g.node("Cast", ["attention_mask"], { to: { i: FLOAT } }), g.ints([2])]); // (B, T, 1)
    const summed = g.node("ReduceSum", [g.node("Mul", [x, real]), g.ints([1])], { keepdims: { i: 0 } }); // (B, C)
    const count = g.node("Max", [
      g.node("ReduceSum", [real, g.ints([1])], { keepdims: { i: 0 } }),
      g.floatScalar(1),
    ]);
    pooled = g.node("Div", [summed, count]);
  } else if (head.task !== "ner") {
    const first = g.node("Gather", [x, g.ints([0])], { axis: { i: 1 } }); // (B, 1, C)
    const firstFlat = g.node("Squeeze", [first, g.ints([1])]); // (B, C)
    pooled = g.node("Tanh", [linear(firstFlat, "bert.pooler.dense")]);
    g.node("Identity", [pooled], {}, "pooler_output");
    outputs.push(valueInfo("pooler_output", FLOAT, ["batch", C]));
  }
  if (head.task === "pretrain") {
    const t = layerNorm(
      gelu(linear(x, "cls.predictions.transform.dense")),
      "cls.predictions.transform.LayerNorm",
    );
    const decoder = g.node("Transpose", ["bert.embeddings.word_embeddings.weight"], {
      perm: { ints: [1, 0] },
    }); // (C, V)
    g.node("Add", [g.node("MatMul", [t, decoder]), param("cls.predictions.bias")], {}, "logits"); // (B, T, V)
    g.node("Identity", [linear(pooled!, "cls.seq_relationship")], {}, "nsp_logits"); // (B, 2)
    outputs.unshift(valueInfo("logits", FLOAT, ["batch", "sequence", config.vocab_size]));
    outputs.splice(1, 0, valueInfo("nsp_logits", FLOAT, ["batch", 2]));
  } else if (head.task === "ner") {
    g.node("Identity", [linear(x, "classifier")], {}, "logits"); // (B, T, K)
    outputs.unshift(valueInfo("logits", FLOAT, ["batch", "sequence", head.numLabels!]));
  } else {
    g.node("Identity", [linear(pooled!, "classifier")], {}, "logits"); // (B, K)
    outputs.unshift(valueInfo("logits", FLOAT, ["batch", head.numLabels!]));
  }

  const graph = new Message();
  for (const node of g.nodes) graph.message(1, node);
  graph.string(2, "bertforge");
  for (const init of g.initializers) graph.message(5, init);
  for (const input of ["input_ids", "attention_mask", "token_type_ids"]) {
    graph.message(11, valueInfo(input, INT64, ["batch", "sequence"]));
  }
  for (const output of outputs) graph.message(12, output);
  return new Message()
    .int(1, IR_VERSION)
    .string(2, "bertforge")
    .string(3, "1")
    .message(7, graph)
    .message(8, new Message().string(1, "").int(2, OPSET));
}

/** Writes `model.onnx` chunk by chunk (the weights are never copied into one buffer). */
export async function exportOnnx(
  path: string,
  model: { config: BertConfig; head: HeadSpec; weights: Weights },
): Promise<void> {
  const proto = buildOnnxModel(model.config, model.head, model.weights);
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  const file = await Deno.open(temp, { write: true, create: true, truncate: true });
  try {
    for (const part of proto.parts) {
      for (let written = 0; written < part.length;) written += await file.write(part.subarray(written));
    }
    await file.sync();
  } catch (e) {
    file.close();
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
  file.close();
  await Deno.rename(temp, path);
}

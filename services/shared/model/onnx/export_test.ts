import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import * as ort from "onnxruntime-node";
import type { Batch, HeadSpec } from "../../engine/engine.ts";
import { createTfjsEngine } from "../../engine/tfjs/mod.ts";
import { initWeights } from "../checkpoint.ts";
import { type BertConfig, parseConfig } from "../config.ts";
import { exportOnnx } from "./export.ts";

const config = parseConfig({
  vocab_size: 99,
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 37,
  max_position_embeddings: 16,
});

function batch(B: number, T: number): Batch {
  const inputIds = Int32Array.from({ length: B * T }, (_, i) => 5 + ((i * 37) % 90));
  const attentionMask = Int32Array.from({ length: B * T }, (_, i) => (i % T < T - (i / T | 0) ? 1 : 0));
  const tokenTypeIds = Int32Array.from({ length: B * T }, (_, i) => (i % T >= T / 2 ? 1 : 0));
  inputIds.forEach((_, i) => attentionMask[i] || (inputIds[i] = 0));
  return { B, T, inputIds, tokenTypeIds, attentionMask };
}

const int64 = (a: Int32Array, B: number, T: number) =>
  new ort.Tensor("int64", BigInt64Array.from(a, BigInt), [B, T]);

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assertEquals(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

const preLN = parseConfig({ ...config, bertforge_layer_norm: "pre" });

const cases: Array<[HeadSpec, BertConfig]> = [
  [{ task: "pretrain" }, config],
  [{ task: "classify", numLabels: 3 }, config],
  [{ task: "classify", numLabels: 3, pooling: "mean" }, config],
  [{ task: "ner", numLabels: 5, crf: true }, config],
  [{ task: "pretrain" }, preLN],
  [{ task: "ner", numLabels: 5 }, preLN],
];

for (const [head, config] of cases) {
  const what = `'${head.task}'${head.pooling ? ` (${head.pooling} pooling)` : ""}${
    config.bertforge_layer_norm === "pre" ? " pre-LN" : ""
  }`;
  Deno.test(`exportOnnx() ${what} loads in onnxruntime-node and matches tfjs to 1e-4 at two shapes`, async () => {
    const dir = await Deno.makeTempDir();
    const weights = initWeights(config, head, 4);
    // Larger than BERT's init so the outputs are far from trivial; LayerNorms away from 1 and 0, each its own,
    // so a graph that swaps two of them (LN1/LN2 of a pre-LN layer) fails.
    for (const [name, t] of weights) {
      if (!name.includes("LayerNorm")) t.data.forEach((x, i) => (t.data[i] = x * 10));
      else t.data.forEach((x, i) => (t.data[i] = x + 0.2 * Math.sin(i + 7 * name.length)));
    }
    const path = join(dir, "model.onnx");
    await exportOnnx(path, { config, head, weights });
    const session = await ort.InferenceSession.create(path);
    assertEquals([...session.inputNames].sort(), ["attention_mask", "input_ids", "token_type_ids"]);
    assert(session.outputNames.includes("logits"));
    const engine = await createTfjsEngine({ config, head, backend: "cpu" });
    engine.setWeights(weights);
    try {
      for (const [B, T] of [[3, 7], [2, 11]] as const) {
        const b = batch(B, T);
        const result = await session.run({
          input_ids: int64(b.inputIds, B, T),
          attention_mask: int64(b.attentionMask, B, T),
          token_type_ids: int64(b.tokenTypeIds, B, T),
        });
        const expected = engine.forward(b, { mlmLogits: true, wantHidden: true });
        const logits = result.logits!.data as Float32Array;
        assert(
          maxDiff(logits, expected.logits) < 1e-4,
          `logits differ by ${maxDiff(logits, expected.logits)}`,
        );
        const hidden = result.last_hidden_state!.data as Float32Array;
        assert(
          maxDiff(hidden, expected.hidden!) < 1e-4,
          `hidden differs by ${maxDiff(hidden, expected.hidden!)}`,
        );
        if (head.task === "pretrain") {
          assert(maxDiff(result.nsp_logits!.data as Float32Array, expected.nspLogits!) < 1e-4);
        }
        // pooler_output is the HF pooler's; a mean-pooling model has none to offer
        assertEquals(session.outputNames.includes("pooler_output"), head.task !== "ner" && !head.pooling);
      }
    } finally {
      engine.dispose();
      await session.release();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

/**
 * Native engine vs PyTorch on the same weights (testdata/torch_parity.py, run with /usr/bin/python3): MLM and
 * NSP losses, NSP logits and every parameter gradient of BertForPreTraining, C and TypeScript kernels.
 * Skipped where /usr/bin/python3 with torch is absent. The full fixture suite lives in tests/parity/.
 */
import { assert } from "@std/assert";
import type { BertConfig } from "../../model/config.ts";
import { NativeEngine } from "./native_engine.ts";

interface Fixture {
  weights: Record<string, { shape: number[]; data: number[]; grad: number[]; after: number[] }>;
  ids: number[];
  types: number[];
  attn: number[];
  labels: number[];
  nsp: number[];
  mlm: number;
  nspLoss: number;
  nspLogits: number[];
}

async function torchFixture(): Promise<Fixture | null> {
  const out = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const script = new URL("./testdata/torch_parity.py", import.meta.url).pathname;
    const run = await new Deno.Command("/usr/bin/python3", {
      args: [script, out],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return run.success ? JSON.parse(await Deno.readTextFile(out)) : null;
  } catch {
    return null;
  } finally {
    await Deno.remove(out).catch(() => {});
  }
}

const fixture = await torchFixture();

const config: BertConfig = {
  vocab_size: 99,
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 37,
  hidden_act: "gelu",
  hidden_dropout_prob: 0.1,
  attention_probs_dropout_prob: 0.1,
  max_position_embeddings: 16,
  type_vocab_size: 2,
  initializer_range: 0.02,
  layer_norm_eps: 1e-12,
  pad_token_id: 0,
};

for (const kernels of ["c", "ts"] as const) {
  Deno.test({
    name: `native engine (${kernels} kernels) matches PyTorch losses, logits and gradients (1e-4)`,
    ignore: fixture === null,
    fn() {
      const fx = fixture!;
      const engine = new NativeEngine({
        config: { ...config, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 },
        head: { task: "pretrain" },
        maxBatch: 3,
        maxSeqLen: 7,
        kernels,
        optimizer: { lr: 1e-3, weightDecay: 0.01, eps: 1e-6, maxGradNorm: 1, warmupSteps: 0, totalSteps: 10 },
      });
      engine.setWeights(
        new Map(
          Object.entries(fx.weights).map((
            [n, t],
          ) => [n, { shape: t.shape, data: Float32Array.from(t.data) }]),
        ),
      );
      const batch = {
        B: 3,
        T: 7,
        inputIds: Int32Array.from(fx.ids),
        tokenTypeIds: Int32Array.from(fx.types),
        attentionMask: Int32Array.from(fx.attn),
        mlmLabels: Int32Array.from(fx.labels),
        nspLabels: Int32Array.from(fx.nsp),
      };
      const stats = engine.computeGradients(batch, false);
      assert(Math.abs(stats.mlmLoss! - fx.mlm) < 1e-5, `mlm loss ${stats.mlmLoss} vs torch ${fx.mlm}`);
      assert(
        Math.abs(stats.nspLoss! - fx.nspLoss) < 1e-5,
        `nsp loss ${stats.nspLoss} vs torch ${fx.nspLoss}`,
      );
      const logits = engine.forward(batch).nspLogits!;
      fx.nspLogits.forEach((v, i) =>
        assert(Math.abs(logits[i] - v) < 1e-5, `nsp logit ${i}: ${logits[i]} vs ${v}`)
      );
      const grads = engine.getGradients();
      for (const [name, t] of Object.entries(fx.weights)) {
        // the key bias cannot change any softmax (it shifts a whole row): its true gradient is 0, both are noise
        if (name.includes("attention.self.key.bias")) continue;
        const ours = grads.get(name)!.data;
        let worst = 0, scale = 0;
        for (let i = 0; i < ours.length; i++) {
          worst = Math.max(worst, Math.abs(ours[i] - t.grad[i]));
          scale = Math.max(scale, Math.abs(t.grad[i]));
        }
        assert(
          worst <= 1e-4 * scale + 1e-7,
          `${name}: largest gradient difference ${worst} (scale ${scale})`,
        );
      }
      // one optimizer step (clipping, decay groups, bias correction) lands on torch.optim.AdamW's weights
      engine.trainStep(batch);
      const after = engine.getWeights();
      for (const [name, t] of Object.entries(fx.weights)) {
        if (name.includes("attention.self.key.bias")) continue; // its update is the sign of noise
        const ours = after.get(name)!.data;
        let worst = 0;
        for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i] - t.after[i]));
        assert(worst <= 1e-5, `${name} after one AdamW step: largest difference ${worst}`);
      }
      engine.dispose();
    },
  });
}

/**
 * A checkpoint with the shape of bert-base-chinese (random weights) goes the whole way: saved in the HF layout,
 * loaded for a classification head (encoder kept, head initialised), fine-tuned one step, saved again and loaded
 * back with the trained weights. Runs on the native engine when it loads (seconds), else skips: a bert-base
 * step on the tfjs cpu backend takes minutes.
 */
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { join } from "@std/path";
import { createEngine } from "../../services/shared/engine/select.ts";
import type { Engine } from "../../services/shared/engine/engine.ts";
import { initWeights, loadModelDir, saveModelDir } from "../../services/shared/model/checkpoint.ts";
import { parseConfig } from "../../services/shared/model/config.ts";

const configPath = new URL("../../../shared/data/bert-base-chinese/config.json", import.meta.url);
const configText = await Deno.readTextFile(configPath).catch(() => undefined);

async function nativeOrUndefined(options: Parameters<typeof createEngine>[0]): Promise<Engine | undefined> {
  try {
    return await createEngine({ ...options, backend: "native", log: () => {} });
  } catch (e) {
    console.warn(`bert-base test skipped: native engine unavailable (${(e as Error).message})`);
    return undefined;
  }
}

Deno.test({
  name: "a bert-base-chinese shaped checkpoint loads for a new head, fine-tunes one step, saves and reloads",
  ignore: configText === undefined,
  fn: async () => {
    const config = parseConfig(configText!);
    const root = await Deno.makeTempDir();
    try {
      await saveModelDir(join(root, "base"), {
        config,
        head: { task: "pretrain" },
        weights: initWeights(config, { task: "pretrain" }, 7),
        vocabText: "[PAD]\n",
      });
      const head = { task: "classify" as const, numLabels: 2 };
      const loaded = await loadModelDir(join(root, "base"), { head, seed: 1 });
      assertEquals(loaded.initialized, ["classifier.weight", "classifier.bias"]);
      const engine = await nativeOrUndefined({
        config,
        head,
        maxBatch: 2,
        maxSeqLen: 16,
        optimizer: { lr: 1e-3 },
      });
      if (!engine) return;
      try {
        engine.setWeights(loaded.weights);
        const T = 16;
        const batch = {
          B: 2,
          T,
          inputIds: Int32Array.from({ length: 2 * T }, (_, i) => 100 + i * 13),
          tokenTypeIds: new Int32Array(2 * T),
          attentionMask: new Int32Array(2 * T).fill(1),
          labels: new Int32Array([0, 1]),
        };
        const stats = engine.trainStep(batch);
        assert(Number.isFinite(stats.loss) && stats.loss > 0, `loss ${stats.loss}`);
        const trained = engine.getWeights();
        const q = "bert.encoder.layer.11.attention.self.query.weight";
        assertNotEquals(trained.get(q)!.data, loaded.weights.get(q)!.data, "the step moved the encoder");
        await saveModelDir(join(root, "tuned"), { config, head, weights: trained, vocabText: "[PAD]\n" });
        const back = await loadModelDir(join(root, "tuned"));
        assertEquals(back.head, head);
        assertEquals(back.weights.get(q)!.data, trained.get(q)!.data);
      } finally {
        engine.dispose();
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

/**
 * The ONNX Runtime serving backend against the native engine on the same tiny models: a version published with
 * `model.onnx` serves on `onnx` (and under `auto`), and every head answers as the native engine does (1e-4),
 * batched with inputs of other lengths. Skipped while the shared exporter (services/shared/model/onnx) is absent.
 */
import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import { LocalStore } from "../shared/store/mod.ts";
import { Batcher } from "./batcher.ts";
import { Inference } from "./infer.ts";
import { Registry } from "./registry.ts";
import { loadOnnxExporter, publishTinyModel } from "./testing.ts";

const exporter = await loadOnnxExporter();

Deno.test({
  name: "onnx backend answers Classify, Tag (CRF), FillMask and Embed as the native engine does",
  ignore: exporter === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "bertforge-onnx-backend-" });
    const store = new LocalStore(dir);
    const registries: Registry[] = [];
    try {
      await publishTinyModel(store, "cls", { task: "classify", onnx: true });
      await publishTinyModel(store, "cls-mean", { task: "classify", pooling: "mean", onnx: true });
      await publishTinyModel(store, "ner", { task: "ner", crf: true, onnx: true });
      await publishTinyModel(store, "pre", { task: "pretrain", onnx: true });
      const make = (backend: string) => {
        const registry = new Registry({ store, backend, maxBatchTokens: 512, reloadIntervalMs: 0 });
        registries.push(registry);
        return new Inference(
          registry,
          new Batcher({ maxBatchTokens: 512, maxBatchRequests: 8, maxConcurrentRequests: 64 }),
        );
      };
      const onnx = make("onnx"), native = make("native"), auto = make("auto");
      const texts = ["今天天气很好", "hello world", "张三在北京上海", "好"];
      const a = await onnx.classifyBatch({ model: "cls", texts });
      const b = await native.classifyBatch({ model: "cls", texts });
      a.response.results.forEach((r: { logits: number[] }, i: number) =>
        r.logits.forEach((v, k) => assertAlmostEquals(v, b.response.results[i].logits[k], 1e-4))
      );
      // A mean-pooling classifier is served as trained by the exported graph, the native engine and tfjs alike.
      const cpu = make("cpu");
      const means = await Promise.all(
        [onnx, native, cpu].map((i) => i.classifyBatch({ model: "cls-mean", texts })),
      );
      for (const other of means.slice(1)) {
        other.response.results.forEach((r: { logits: number[] }, i: number) =>
          r.logits.forEach((v, k) => assertAlmostEquals(v, means[0]!.response.results[i].logits[k], 1e-4))
        );
      }
      const tagOnnx = await onnx.tagBatch({ model: "ner", texts, options: { return_tags: true } });
      const tagNative = await native.tagBatch({ model: "ner", texts, options: { return_tags: true } });
      assertEquals(
        tagOnnx.response.results.map((r: { tags: { tag: string }[] }) => r.tags.map((t) => t.tag)),
        tagNative.response.results.map((r: { tags: { tag: string }[] }) => r.tags.map((t) => t.tag)),
      );
      const fillOnnx = await onnx.fillMask({ model: "pre", text: "今天[MASK]气很好", options: { top_k: 3 } });
      const fillNative = await native.fillMask({
        model: "pre",
        text: "今天[MASK]气很好",
        options: { top_k: 3 },
      });
      const ids = (r: typeof fillOnnx) =>
        r.response.result.predictions[0].candidates.map((c: { id: number }) => c.id);
      assertEquals(ids(fillOnnx), ids(fillNative));
      const embOnnx = await onnx.embed({ model: "pre", text: "hello", options: { pooling: "POOLING_MEAN" } });
      const embNative = await native.embed({
        model: "pre",
        text: "hello",
        options: { pooling: "POOLING_MEAN" },
      });
      embOnnx.response.result.values.forEach((v: number, i: number) =>
        assertAlmostEquals(v, embNative.response.result.values[i], 1e-4)
      );
      await auto.classify({ model: "cls", text: "好" });
      assertEquals(
        registries[2]!.resident({ name: "cls" })!.backend.name,
        "onnx",
        "auto prefers an exported graph",
      );
      assert(registries[1]!.resident({ name: "cls" })!.backend.name === "native");
    } finally {
      for (const registry of registries) await registry.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

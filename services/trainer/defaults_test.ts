import { assertEquals, assertStringIncludes } from "@std/assert";
import { finetuneDefaults } from "./defaults.ts";

const mini = { hidden_size: 256, num_hidden_layers: 4, max_position_embeddings: 512 };
const base = { hidden_size: 768, num_hidden_layers: 12, max_position_embeddings: 512 };

Deno.test("finetuneDefaults(): a small model gets a higher rate, small batches, more epochs and mean pooling", () => {
  const d = finetuneDefaults("classify", { config: mini, pretrainedPooler: true });
  assertEquals([d.learningRate, d.batchSize, d.epochs, d.maxLength, d.pooling], [3e-4, 16, 4, 128, "mean"]);
  const ner = finetuneDefaults("ner", { config: mini, pretrainedPooler: true });
  assertEquals([ner.learningRate, ner.epochs, ner.maxLength, ner.pooling], [1e-3, 20, 32, undefined]);
  assertStringIncludes(d.why, "mini-sized");
});

Deno.test("finetuneDefaults(): base-sized models keep the BERT paper's recipe and the pooler it pretrained", () => {
  const d = finetuneDefaults("pair", { config: base, pretrainedPooler: true });
  assertEquals([d.learningRate, d.batchSize, d.epochs, d.maxLength, d.pooling], [3e-5, 32, 3, 128, "cls"]);
  assertEquals(finetuneDefaults("ner", { config: base, pretrainedPooler: true }).maxLength, 128);
});

Deno.test("finetuneDefaults(): a base pretrained without NSP reads the mean (its pooler was never trained)", () => {
  const d = finetuneDefaults("classify", { config: base, pretrainedPooler: false });
  assertEquals(d.pooling, "mean");
  assertStringIncludes(d.why, "never trained");
});

Deno.test("finetuneDefaults(): max length never exceeds the model's positions", () => {
  const d = finetuneDefaults("classify", {
    config: { ...mini, max_position_embeddings: 64 },
    pretrainedPooler: true,
  });
  assertEquals(d.maxLength, 64);
});

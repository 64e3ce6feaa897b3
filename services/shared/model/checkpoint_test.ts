import { assert, assertEquals, assertNotEquals, assertRejects, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { InvalidArgument, NotFound } from "../errors.ts";
import {
  adaptWeights,
  checkWeights,
  configForHead,
  expectedTensors,
  headFromConfig,
  initWeights,
  loadModelDir,
  saveModelDir,
} from "./checkpoint.ts";
import { type BertConfig, parseConfig } from "./config.ts";
import { openSafetensors, writeSafetensors } from "./safetensors.ts";

// Odd sizes so a swapped dimension fails loudly.
const tiny: BertConfig = parseConfig({
  vocab_size: 99,
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 37,
  max_position_embeddings: 64,
});

Deno.test("expectedTensors() lists HF names and [out, in] shapes for each head", () => {
  const pre = expectedTensors(tiny, { task: "pretrain" });
  assertEquals(pre.get("bert.embeddings.word_embeddings.weight"), [99, 32]);
  assertEquals(pre.get("bert.encoder.layer.1.intermediate.dense.weight"), [37, 32]);
  assertEquals(pre.get("bert.encoder.layer.1.output.dense.weight"), [32, 37]);
  assertEquals(pre.get("cls.predictions.bias"), [99]);
  assertEquals(pre.get("cls.seq_relationship.weight"), [2, 32]);
  assert(!pre.has("cls.predictions.decoder.weight"), "the tied decoder is not a tensor of its own");
  // 5 embedding tensors + 16 per layer + pooler 2 + MLM transform 4 + bias 1 + NSP 2
  assertEquals(pre.size, 5 + 16 * 2 + 2 + 4 + 1 + 2);
  const cls = expectedTensors(tiny, { task: "classify", numLabels: 3 });
  assertEquals(cls.get("classifier.weight"), [3, 32]);
  assert(cls.has("bert.pooler.dense.weight"));
  const ner = expectedTensors(tiny, { task: "ner", numLabels: 5, crf: true });
  assert(!ner.has("bert.pooler.dense.weight"), "HF BertForTokenClassification has no pooler");
  assertEquals(ner.get("crf.transitions"), [5, 5]);
  assertEquals(ner.get("crf.start_transitions"), [5]);
  assertThrows(() => expectedTensors(tiny, { task: "classify" }), InvalidArgument, "numLabels");
  const mean = expectedTensors(tiny, { task: "classify", numLabels: 3, pooling: "mean" });
  assert(!mean.has("bert.pooler.dense.weight"), "a mean-pooling classifier reads no pooler");
  assertEquals(mean.size, cls.size - 2);
  assertThrows(
    () => expectedTensors(tiny, { task: "ner", numLabels: 5, pooling: "mean" }),
    InvalidArgument,
    "pooling",
  );
});

Deno.test("configForHead() records mean pooling and headFromConfig() reads it back; other heads drop it", () => {
  const head = { task: "classify" as const, numLabels: 2, pooling: "mean" as const };
  const config = configForHead(tiny, head, ["neg", "pos"]);
  assertEquals([config.architectures, config.bertforge_pooling], [["BertForSequenceClassification"], "mean"]);
  assertEquals(headFromConfig(config), head);
  const pooler = configForHead(config, { task: "classify", numLabels: 2 }, ["neg", "pos"]);
  assertEquals([pooler.bertforge_pooling, headFromConfig(pooler)], [undefined, {
    task: "classify",
    numLabels: 2,
  }]);
  assertEquals(configForHead(config, { task: "pretrain" }).bertforge_pooling, undefined);
});

Deno.test("initWeights() is seeded, deterministic and initialises like HF", () => {
  const a = initWeights(tiny, { task: "pretrain" }, 7);
  const b = initWeights(tiny, { task: "pretrain" }, 7);
  const c = initWeights(tiny, { task: "pretrain" }, 8);
  const q = "bert.encoder.layer.0.attention.self.query.weight";
  assertEquals(a.get(q)!.data, b.get(q)!.data);
  assertNotEquals(a.get(q)!.data, c.get(q)!.data);
  const words = a.get("bert.embeddings.word_embeddings.weight")!.data;
  let sum = 0, sq = 0;
  for (const x of words.subarray(32)) (sum += x), (sq += x * x);
  const n = words.length - 32;
  const std = Math.sqrt(sq / n - (sum / n) ** 2);
  assert(Math.abs(std - 0.02) < 0.002, `std ${std} should be near initializer_range 0.02`);
  assert(words.subarray(0, 32).every((x) => x === 0), "the padding row is zero");
  assert(a.get("bert.embeddings.LayerNorm.weight")!.data.every((x) => x === 1));
  assert(a.get("cls.predictions.bias")!.data.every((x) => x === 0));
  // Adding a head does not change the encoder's draws.
  const cls = initWeights(tiny, { task: "classify", numLabels: 2 }, 7);
  assertEquals(cls.get(q)!.data, a.get(q)!.data);
  checkWeights(a, tiny, { task: "pretrain" });
});

Deno.test("saveModelDir() / loadModelDir() round-trip the HF layout atomically", async () => {
  const root = await Deno.makeTempDir();
  const dir = join(root, "models", "m1");
  const head = { task: "ner" as const, numLabels: 3, crf: true };
  const weights = initWeights(tiny, head, 1);
  const written = await saveModelDir(dir, {
    config: tiny,
    head,
    labels: ["O", "B-PER", "I-PER"],
    weights,
    vocabText: "[PAD]\n[UNK]\n",
    tokenizerJson: "{}",
    extraFiles: { "lineage.json": '{"vocab":"v1"}' },
  });
  assertEquals(written.architectures, ["BertForTokenClassification"]);
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assertEquals(names, [
    "config.json",
    "lineage.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
  ]);
  const loaded = await loadModelDir(dir);
  assertEquals(loaded.config.id2label, { "0": "O", "1": "B-PER", "2": "I-PER" });
  assertEquals(loaded.config.label2id, { O: 0, "B-PER": 1, "I-PER": 2 });
  assertEquals(loaded.head, head);
  assertEquals(loaded.metadata.format, "pt");
  for (const [name, t] of weights) assertEquals(loaded.weights.get(name)!.data, t.data, name);
  // Overwriting leaves exactly one complete folder and no temp folders.
  await saveModelDir(dir, { config: tiny, head, weights, vocabText: "x\n" });
  assertEquals([...Deno.readDirSync(join(root, "models"))].map((e) => e.name), ["m1"]);
  assertEquals(await Deno.readTextFile(join(dir, "vocab.txt")), "x\n");
  await assertRejects(() => loadModelDir(join(root, "nope")), NotFound, "config.json");
  await Deno.remove(root, { recursive: true });
});

Deno.test("loading a base model for another head keeps the encoder and initialises the head", async () => {
  const root = await Deno.makeTempDir();
  const base = initWeights(tiny, { task: "pretrain" }, 3);
  await saveModelDir(root + "/base", {
    config: tiny,
    head: { task: "pretrain" },
    weights: base,
    vocabText: "",
  });
  const head = { task: "classify" as const, numLabels: 4 };
  const loaded = await loadModelDir(root + "/base", { head, seed: 5 });
  assertEquals(loaded.initialized, ["classifier.weight", "classifier.bias"]);
  assert(loaded.dropped!.includes("cls.predictions.bias"));
  const q = "bert.encoder.layer.1.attention.self.key.weight";
  assertEquals(loaded.weights.get(q)!.data, base.get(q)!.data);
  checkWeights(loaded.weights, tiny, head);
  await Deno.remove(root, { recursive: true });
});

Deno.test("legacy gamma/beta names and tied decoder copies load; missing or misshapen tensors are named", async () => {
  const root = await Deno.makeTempDir();
  const weights = initWeights(tiny, { task: "pretrain" }, 2);
  const legacy = new Map(
    [...weights].map((
      [n, t],
    ) => [
      n.replace(/LayerNorm\.weight$/, "LayerNorm.gamma").replace(/LayerNorm\.bias$/, "LayerNorm.beta"),
      t,
    ]),
  );
  legacy.set("cls.predictions.decoder.weight", weights.get("bert.embeddings.word_embeddings.weight")!);
  await Deno.mkdir(join(root, "legacy"));
  await Deno.writeTextFile(
    join(root, "legacy", "config.json"),
    JSON.stringify({ ...tiny, architectures: ["BertForPreTraining"] }),
  );
  await Deno.writeTextFile(join(root, "legacy", "vocab.txt"), "");
  await writeSafetensors(join(root, "legacy", "model.safetensors"), legacy);
  const loaded = await loadModelDir(join(root, "legacy"), { head: { task: "pretrain" } });
  assertEquals(loaded.initialized, []);
  assertEquals(loaded.dropped, []);
  checkWeights(loaded.weights, tiny, { task: "pretrain" });

  const broken = new Map(weights);
  broken.delete("bert.encoder.layer.1.output.dense.bias");
  broken.set("bert.embeddings.position_embeddings.weight", { shape: [10, 32], data: new Float32Array(320) });
  const error = assertThrows(() => adaptWeights(broken, tiny, { task: "pretrain" }), InvalidArgument);
  assert(error.message.includes("missing 'bert.encoder.layer.1.output.dense.bias' [32]"), error.message);
  assert(
    error.message.includes(
      "'bert.embeddings.position_embeddings.weight' has shape [10,32], expected [64,32]",
    ),
    error.message,
  );
  broken.set("surprise", { shape: [1], data: new Float32Array(1) });
  assertThrows(
    () => checkWeights(broken, tiny, { task: "pretrain" }),
    InvalidArgument,
    "unexpected 'surprise'",
  );
  await Deno.remove(root, { recursive: true });
});

Deno.test("a bert-base-chinese shaped checkpoint saves, streams and loads", async () => {
  const config = parseConfig(
    await Deno.readTextFile(
      new URL("../../../../shared/data/bert-base-chinese/config.json", import.meta.url),
    ),
  );
  const head = headFromConfig(config) ?? { task: "pretrain" as const };
  assertEquals(head, { task: "pretrain" }, "BertForMaskedLM falls back to the pretraining head");
  const root = await Deno.makeTempDir();
  const weights = initWeights(config, head, 0);
  await saveModelDir(join(root, "bbc"), { config, head, weights, vocabText: "" });
  const reader = await openSafetensors(join(root, "bbc", "model.safetensors"));
  assertEquals(reader.info("bert.embeddings.word_embeddings.weight")!.shape, [21128, 768]);
  assertEquals(reader.names().length, expectedTensors(config, head).size);
  reader.close();
  const loaded = await loadModelDir(join(root, "bbc"), { head: { task: "classify", numLabels: 2 } });
  const w = "bert.encoder.layer.11.output.dense.weight";
  assertEquals(loaded.weights.get(w)!.shape, [768, 3072]);
  assertEquals(loaded.weights.get(w)!.data, weights.get(w)!.data);
  await Deno.remove(root, { recursive: true });
});

Deno.test("canonicalName() adds the bert. prefix of bare BertModel checkpoints and renames gamma/beta", async () => {
  const { canonicalName } = await import("./checkpoint.ts");
  assertEquals(canonicalName("embeddings.word_embeddings.weight"), "bert.embeddings.word_embeddings.weight");
  assertEquals(
    canonicalName("encoder.layer.3.output.LayerNorm.gamma"),
    "bert.encoder.layer.3.output.LayerNorm.weight",
  );
  assertEquals(
    canonicalName("cls.predictions.transform.LayerNorm.beta"),
    "cls.predictions.transform.LayerNorm.bias",
  );
  assertEquals(canonicalName("classifier.weight"), "classifier.weight");
});

import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertGreater,
  assertLess,
  assertRejects,
  assertThrows,
} from "@std/assert";
import { LocalStore } from "../shared/store/local.ts";
import { InvalidArgument, NotFound } from "../shared/errors.ts";
import { initWeights, saveModelDir } from "../shared/model/checkpoint.ts";
import { parseConfig } from "../shared/model/config.ts";
import { parseSafetensorsHeader } from "../shared/model/safetensors.ts";
import { FeatureBatchSource, reinitTop, runFinetuneJob } from "./finetune.ts";
import { storeDataset } from "./datasets.ts";
import { publishModel } from "./models.ts";
import type { TrainerEvent } from "./loop.ts";
import { tinyConfigJson, tinyVocabText } from "./testing.ts";
import { Trainer } from "./service.ts";
import { Rng } from "../shared/shards/rng.ts";

const CHARS = Array.from({ length: 90 }, (_, i) => String.fromCodePoint(0x4e00 + i));

/** A base model in the store: random tiny weights (fine-tuning must still learn these separable toys). */
async function withBase(fn: (store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "bf-finetune-test-" });
  const store = new LocalStore(dir);
  try {
    const config = parseConfig(tinyConfigJson({ hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }));
    await publishModel(store, {
      name: "base",
      config,
      head: { task: "pretrain" },
      weights: initWeights(config, { task: "pretrain" }, 5),
      vocabText: tinyVocabText(),
    });
    await fn(store);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function bio(
  n: number,
  seed: number,
  shape: { length: number; plain: number } = { length: 10, plain: 0 },
): string {
  // PER = characters 0..9, LOC = characters 10..19, anything else O; entities are 1-3 characters long, none
  // among the first `plain` characters of a sentence.
  const rng = Rng.seeded(seed);
  const sentences: string[] = [];
  for (let s = 0; s < n; s++) {
    const lines: string[] = [];
    while (lines.length < shape.length) {
      if (rng.random() < 0.3 && lines.length >= shape.plain) {
        const type = rng.random() < 0.5 ? "PER" : "LOC";
        const length = rng.randint(1, 3);
        for (let k = 0; k < length; k++) {
          const c = CHARS[(type === "PER" ? 0 : 10) + rng.randint(0, 9)]!;
          lines.push(`${c} ${k === 0 ? "B" : "I"}-${type}`);
        }
        // An O after every entity, so where one ends is in the data, not a guess.
        lines.push(`${CHARS[rng.randint(20, 89)]} O`);
      } else lines.push(`${CHARS[rng.randint(20, 89)]} O`);
    }
    sentences.push(lines.join("\n"));
  }
  return sentences.join("\n\n") + "\n";
}

const enc = (text: string) => new TextEncoder().encode(text);

/** A NER fine-tune of the base at max_length 16 on datasets `<data>-train`/`<data>-dev`, and its events. */
async function finetuneNer(store: LocalStore, data: string, crf: boolean) {
  const events: TrainerEvent[] = [];
  const name = `${data}${crf ? "-crf" : ""}`;
  const outcome = await runFinetuneJob({
    name,
    base: { name: "base" },
    task: "ner",
    crf,
    trainDataset: `${data}-train`,
    evalDataset: `${data}-dev`,
    epochs: 20,
    batchSize: 16,
    learningRate: 1e-2,
    maxLength: 16,
  }, { jobId: `job-${name}`, store, emit: (e) => void events.push(e), threads: 1 });
  return { outcome, events };
}

Deno.test("runFinetuneJob() NER with and without CRF learns entities and reports seqeval scores", () =>
  withBase(async (store) => {
    await storeDataset(store, { name: "ner-train", file: "train.bio", bytes: enc(bio(160, 1)) });
    await storeDataset(store, { name: "ner-dev", file: "dev.bio", bytes: enc(bio(32, 2)) });
    for (const crf of [false, true]) {
      const { outcome } = await finetuneNer(store, "ner", crf);
      assertGreater(
        outcome.metrics.f1!,
        0.8,
        `entity F1 with crf=${crf}: ${JSON.stringify(outcome.metrics)}`,
      );
      for (const key of ["precision", "recall", "f1", "micro_f1", "macro_f1"]) {
        assert(key in outcome.metrics, key);
      }
      const config = await store.getJson<Record<string, unknown>>(`${outcome.model.prefix}/config.json`);
      assertEquals(config.architectures, ["BertForTokenClassification"]);
      assertEquals(config.id2label, { "0": "O", "1": "B-LOC", "2": "I-LOC", "3": "B-PER", "4": "I-PER" });
      assertEquals(config.bertforge_crf, crf ? true : undefined);
    }
  }));

Deno.test("runFinetuneJob() NER learns and scores entities that lie only past max_length, through windows", () =>
  withBase(async (store) => {
    // At max_length 16 a sentence shows 14 characters; these have none of their entities there, so truncation
    // left no entity to train on and none in the gold (F1 0).
    const shape = { length: 30, plain: 14 };
    await storeDataset(store, { name: "long-train", file: "train.bio", bytes: enc(bio(160, 3, shape)) });
    await storeDataset(store, { name: "long-dev", file: "dev.bio", bytes: enc(bio(16, 4, shape)) });
    for (const crf of [false, true]) {
      const { outcome, events } = await finetuneNer(store, "long", crf);
      assertGreater(outcome.metrics.f1!, 0.8, `crf=${crf}: ${JSON.stringify(outcome.metrics)}`);
      assertEquals([outcome.metrics.eval_examples, outcome.metrics.train_examples], [16, 160]);
      const messages = events.flatMap((e) => (e.type === "message" ? [e.message] : []));
      assert(
        messages.some((m) =>
          m.startsWith("eval: 16 examples, 16 longer than 16 tokens split into overlapping windows")
        ),
        messages.join("\n"),
      );
    }
  }));

/** Reviews of 40 characters whose label shows only in their last 8 (positive: characters 0..9, negative 10..19). */
function lateLabelCsv(n: number, seed: number): string {
  const rng = Rng.seeded(seed);
  const rows = ["label,text"];
  for (let i = 0; i < n; i++) {
    const positive = rng.random() < 0.5;
    const chars = Array.from({ length: 40 }, () => CHARS[rng.randint(20, 89)]!);
    for (const at of [33, 36, 39]) chars[at] = CHARS[(positive ? 0 : 10) + rng.randint(0, 9)]!;
    rows.push(`${positive ? "pos" : "neg"},${chars.join("")}`);
  }
  return rows.join("\n") + "\n";
}

Deno.test("runFinetuneJob() classify with windows reads a text past max_length; Evaluate does the same", () =>
  withBase(async (store) => {
    // At max_length 16 a text shows 14 characters and these carry their label only in the last 8 of 40: cut,
    // the model can only guess; as windows whose logits are averaged, it reads the end.
    await storeDataset(store, { name: "late-train", file: "train.csv", bytes: enc(lateLabelCsv(200, 5)) });
    await storeDataset(store, { name: "late-dev", file: "dev.csv", bytes: enc(lateLabelCsv(40, 6)) });
    const accuracy: Record<string, number> = {};
    for (const windows of [false, true]) {
      const events: TrainerEvent[] = [];
      const name = `late-${windows ? "windows" : "cut"}`;
      const outcome = await runFinetuneJob({
        name,
        base: { name: "base" },
        task: "classify",
        trainDataset: "late-train",
        evalDataset: "late-dev",
        epochs: 15,
        batchSize: 16,
        learningRate: 1e-2,
        maxLength: 16,
        windows,
      }, { jobId: `job-${name}`, store, emit: (e) => void events.push(e), threads: 1 });
      accuracy[name] = outcome.metrics.accuracy!;
      assertEquals([outcome.metrics.eval_examples, outcome.metrics.train_examples], [40, 200]);
      const messages = events.flatMap((e) => (e.type === "message" ? [e.message] : []));
      const expected = windows
        ? "eval: 40 examples, 40 longer than 16 tokens split into overlapping windows"
        : "eval: 40 examples, 40 truncated to 16 tokens";
      assert(messages.some((m) => m.startsWith(expected)), messages.join("\n"));
      const config = await store.getJson<Record<string, unknown>>(`${outcome.model.prefix}/config.json`);
      assertEquals(config.bertforge_long_text, windows ? "windows" : undefined);
      // The trainer's Evaluate reads the model's setting: the same examples and the same accuracy.
      const trainer = new Trainer({ store });
      try {
        const result = await trainer.evaluate({ model: { name }, dataset: "late-dev", batch_size: 8 });
        assertEquals(Number(result.examples), 40);
        assertAlmostEquals(result.metrics.accuracy!, outcome.metrics.accuracy!, 1e-9);
      } finally {
        await trainer.close();
      }
    }
    assertGreater(accuracy["late-windows"]!, 0.9, JSON.stringify(accuracy));
    assertLess(accuracy["late-cut"]!, 0.75, JSON.stringify(accuracy));
  }));

Deno.test("runFinetuneJob() classify with mean pooling learns, publishes no pooler and says so; Evaluate agrees", () =>
  withBase(async (store) => {
    // Label 1 when one of the first ten characters appears anywhere in the text.
    const rng = Rng.seeded(11);
    const csv = (n: number) => {
      const rows = ["label,text"];
      for (let i = 0; i < n; i++) {
        const chars = Array.from({ length: 10 }, () => CHARS[rng.randint(20, 89)]!);
        const positive = i % 2 === 0;
        if (positive) chars[rng.randint(0, 9)] = CHARS[rng.randint(0, 9)]!;
        rows.push(`${positive ? 1 : 0},${chars.join("")}`);
      }
      return rows.join("\n") + "\n";
    };
    await storeDataset(store, { name: "kw-train", file: "train.csv", bytes: enc(csv(200)) });
    await storeDataset(store, { name: "kw-dev", file: "dev.csv", bytes: enc(csv(40)) });
    const events: TrainerEvent[] = [];
    const outcome = await runFinetuneJob({
      name: "kw-mean",
      base: { name: "base" },
      task: "classify",
      trainDataset: "kw-train",
      evalDataset: "kw-dev",
      epochs: 12,
      batchSize: 16,
      learningRate: 1e-2,
      maxLength: 12,
      pooling: "mean",
      reinitLayers: 1,
    }, { jobId: "job-kw-mean", store, emit: (e) => void events.push(e), threads: 1 });
    assertGreater(outcome.metrics.accuracy!, 0.9, JSON.stringify(outcome.metrics));
    const messages = events.flatMap((e) => (e.type === "message" ? [e.message] : []));
    assert(
      messages.some((m) =>
        m.includes("for classify, mean pooling (2 labels)") &&
        m.endsWith("; re-initialised encoder layers 0..0")
      ),
      messages.join("\n"),
    );
    const config = await store.getJson<Record<string, unknown>>(`${outcome.model.prefix}/config.json`);
    assertEquals(config.bertforge_pooling, "mean");
    const file = await store.get(`${outcome.model.prefix}/model.safetensors`);
    const headerLength = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
    const saved = [...parseSafetensorsHeader(file.subarray(8, 8 + headerLength), undefined).tensors.keys()];
    assert(saved.includes("classifier.weight"));
    assert(!saved.some((n) => n.startsWith("bert.pooler.")), saved.join(", "));
    const trainer = new Trainer({ store });
    try {
      const result = await trainer.evaluate({ model: { name: "kw-mean" }, dataset: "kw-dev", batch_size: 8 });
      assertAlmostEquals(result.metrics.accuracy!, outcome.metrics.accuracy!, 1e-9);
    } finally {
      await trainer.close();
    }
  }));

Deno.test("runFinetuneJob() multilabel and pair tasks, early stopping keeps the best weights", () =>
  withBase(async (store) => {
    // Multi-label: label "a" when the text has a character of the first third, "b" for the second third.
    const rng = Rng.seeded(3);
    const rows = ["label,text"];
    for (let i = 0; i < 160; i++) {
      const labels: string[] = [];
      let text = "";
      for (let k = 0; k < 6; k++) {
        const c = rng.randint(0, 89);
        text += CHARS[c];
        if (c < 30 && !labels.includes("a")) labels.push("a");
        if (c >= 30 && c < 60 && !labels.includes("b")) labels.push("b");
      }
      rows.push(`${labels.sort().join("|")},${text}`);
    }
    await storeDataset(store, { name: "ml", file: "ml.csv", bytes: enc(rows.join("\n") + "\n") });
    const events: TrainerEvent[] = [];
    const ml = await runFinetuneJob({
      name: "ml",
      base: { name: "base" },
      task: "multilabel",
      trainDataset: "ml",
      epochs: 10,
      batchSize: 16,
      learningRate: 1e-2,
      maxLength: 12,
      earlyStoppingPatience: 2,
    }, { jobId: "job-ml", store, emit: (e) => void events.push(e), threads: 1 });
    assertGreater(ml.metrics.micro_f1!, 0.8, JSON.stringify(ml.metrics));
    assert("macro_f1" in ml.metrics);
    const mlConfig = await store.getJson<Record<string, unknown>>(`${ml.model.prefix}/config.json`);
    assertEquals([mlConfig.problem_type, mlConfig.bertforge_thresholds], ["multi_label_classification", [
      0.5,
      0.5,
    ]]);
    const evals = events.filter((e) => e.type === "eval");
    const best = evals.filter((e) => e.type === "eval" && e.best).at(-1);
    assert(best && best.type === "eval");
    assertEquals(ml.metrics.best_step, best.step);
    if (events.some((e) => e.type === "early_stop")) {
      assert(evals.length < 10, "stopped before the last epoch");
    }

    // Pairs: label 1 when both texts come from the same half of the characters.
    const pairs = ["label,text_a,text_b"];
    for (let i = 0; i < 160; i++) {
      const a = rng.randint(0, 1), b = rng.randint(0, 1);
      const pick = (half: number) =>
        Array.from({ length: 4 }, () => CHARS[half * 45 + rng.randint(0, 44)]).join("");
      pairs.push(`${a === b ? 1 : 0},${pick(a)},${pick(b)}`);
    }
    await storeDataset(store, { name: "pairs", file: "pairs.csv", bytes: enc(pairs.join("\n") + "\n") });
    const pair = await runFinetuneJob({
      name: "pair",
      base: { name: "base" },
      task: "pair",
      trainDataset: "pairs",
      epochs: 12,
      batchSize: 16,
      learningRate: 1e-2,
      maxLength: 12,
    }, { jobId: "job-pair", store, emit: () => {}, threads: 1 });
    assert(Number.isFinite(pair.metrics.accuracy), JSON.stringify(pair.metrics));
    assert(await store.exists(`${pair.model.prefix}/confusion.svg`));
  }));

Deno.test("runFinetuneJob() refuses what does not fit: unknown base or data, max_length, crf outside ner", () =>
  withBase(async (store) => {
    await storeDataset(store, {
      name: "ok",
      file: "ok.csv",
      bytes: enc("label,text\n0,丁\n1,七\n0,丁\n1,七\n"),
    });
    const ctx = { jobId: "job-x", store, emit: () => {}, threads: 1 };
    const spec = { name: "x", base: { name: "base" }, task: "classify" as const, trainDataset: "ok" };
    await assertRejects(
      () => runFinetuneJob({ ...spec, base: { name: "ghost" } }, ctx),
      NotFound,
      "finetune.base",
    );
    await assertRejects(
      () => runFinetuneJob({ ...spec, trainDataset: "ghost" }, ctx),
      NotFound,
      "train_dataset",
    );
    await assertRejects(
      () => runFinetuneJob({ ...spec, maxLength: 64 }, ctx),
      InvalidArgument,
      "max_position_embeddings",
    );
    await assertRejects(() => runFinetuneJob({ ...spec, crf: true }, ctx), InvalidArgument, "crf");
    await assertRejects(
      () => runFinetuneJob({ ...spec, reinitLayers: 99 }, ctx),
      InvalidArgument,
      "reinit_layers 99 exceeds",
    );
    await assertRejects(
      () => runFinetuneJob({ ...spec, reinitLayers: -1 }, ctx),
      InvalidArgument,
      "reinit_layers",
    );
    await assertRejects(() => runFinetuneJob({ ...spec, task: "ner" }, ctx), InvalidArgument, "ner");
    await assertRejects(
      () => runFinetuneJob({ ...spec, pooling: "max" as "mean" }, ctx),
      InvalidArgument,
      "finetune.pooling must be cls or mean",
    );
  }));

Deno.test("an HF model folder written by saveModelDir loads as a base model", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bf-hf-dir-" });
  try {
    const config = parseConfig(tinyConfigJson());
    await saveModelDir(`${dir}/hf`, {
      config,
      weights: initWeights(config, { task: "pretrain" }, 1),
      vocabText: tinyVocabText(),
    });
    const names = [...Deno.readDirSync(`${dir}/hf`)].map((e) => e.name).sort();
    assertEquals(names, ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reinitTop() replaces the pooler and exactly the top K layers, and refuses more layers than the model has", () => {
  const config = parseConfig(tinyConfigJson({}));
  const head = { task: "classify" as const, numLabels: 2 };
  const pretrained = initWeights(config, head, 1);
  const weights = new Map(pretrained);
  const L = config.num_hidden_layers;
  assertEquals(reinitTop(weights, config, head, 0, 9), "");
  assertEquals([...weights].every(([name, t]) => pretrained.get(name) === t), true);
  const what = reinitTop(weights, config, head, 1, 9);
  assert(what.includes(`${L - 1}`), what);
  for (const [name, tensor] of weights) {
    const replaced = name.startsWith("bert.pooler.") || name.startsWith(`bert.encoder.layer.${L - 1}.`);
    assertEquals(tensor !== pretrained.get(name), replaced, name);
    if (replaced && name.endsWith(".weight") && !name.includes("LayerNorm")) {
      // Fresh draws, not the old values: the seeds differ.
      assert(tensor.data.some((v, i) => v !== pretrained.get(name)!.data[i]), name);
    }
  }
  assertThrows(() => reinitTop(new Map(pretrained), config, head, L + 1, 9), InvalidArgument, "exceeds");
});

Deno.test("fine-tuning batches mix the classes even where the class is the length (the demo's poem forms)", async () => {
  // Two classes, each exactly one length: grouping by length alone makes every batch one class.
  const features = Array.from({ length: 64 }, (_, i) => ({
    ids: Array.from({ length: i % 2 ? 20 : 12 }, () => 7),
    typeIds: [],
    label: i % 2,
    source: { index: i, line: i + 2 },
  }));
  const source = new FeatureBatchSource(
    features as never,
    { task: "classify", numLabels: 2 },
    8,
    24,
    1,
    42,
    { cls: 2, sep: 3, pad: 0 },
  );
  let batches = 0;
  for (let batch = await source.next(); batch; batch = await source.next()) {
    const ones = [...batch.labels!].filter((l) => l === 1).length;
    assert(ones > 0 && ones < batch.B, `batch ${batches} holds ${ones} of class 1 in ${batch.B}`);
    batches++;
  }
  assertEquals(batches, 8);
});

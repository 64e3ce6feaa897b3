import { assert, assertEquals, assertNotEquals, assertRejects, assertThrows } from "@std/assert";
import * as tf from "@tensorflow/tfjs-core";
import { FailedPrecondition, InvalidArgument, Unavailable } from "../../errors.ts";
import type { Batch, HeadSpec } from "../engine.ts";
import { parseConfig } from "../../model/config.ts";
import { initWeights } from "../../model/checkpoint.ts";
import { createTfjsEngine } from "./mod.ts";
import { scheduledLearningRate } from "./optimizer.ts";
import { DEFAULT_OPTIMIZER } from "../engine.ts";
import { useBackend } from "./backend.ts";

await useBackend("cpu"); // tf.memory() needs an initialised backend

// Odd sizes, dropout on: V=99, C=32, NH=4, F=37, L=2.
const config = parseConfig({
  vocab_size: 99,
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 37,
  max_position_embeddings: 16,
});

function batchFor(head: HeadSpec, B = 3, T = 7, seed = 1): Batch {
  let s = seed;
  const next = (n: number) => (s = (s * 1103515245 + 12345) % 2147483648) % n;
  const inputIds = Int32Array.from({ length: B * T }, () => 5 + next(90));
  const attentionMask = Int32Array.from({ length: B * T }, (_, i) => (i % T < T - (i / T | 0) ? 1 : 0));
  inputIds.forEach((_, i) => attentionMask[i] || (inputIds[i] = 0));
  const batch: Batch = { B, T, inputIds, tokenTypeIds: new Int32Array(B * T), attentionMask };
  const K = head.numLabels ?? 0;
  if (head.task === "pretrain") {
    batch.mlmLabels = Int32Array.from(inputIds, (id, i) => (i % 3 === 1 && attentionMask[i] ? id : -100));
    batch.nspLabels = Int32Array.from({ length: B }, (_, b) => b % 2);
  } else if (head.task === "ner") {
    batch.tokenLabels = Int32Array.from(inputIds, (_, i) => (attentionMask[i] && i % T ? next(K) : -100));
  } else if (head.task === "multilabel") {
    batch.multiLabels = Float32Array.from({ length: B * K }, () => next(2));
  } else batch.labels = Int32Array.from({ length: B }, () => next(K));
  return batch;
}

const HEADS: HeadSpec[] = [
  { task: "pretrain" },
  { task: "classify", numLabels: 3 },
  { task: "multilabel", numLabels: 4 },
  { task: "ner", numLabels: 5, crf: true },
];

Deno.test("TfjsEngine leaks no tensor in trainStep, forward, evaluate, setWeights, train state, dispose", async () => {
  for (const head of HEADS) {
    const before = tf.memory().numTensors;
    const engine = await createTfjsEngine({ config, head, seed: 3, optimizer: { gradAccumSteps: 2 } });
    const batch = batchFor(head);
    engine.trainStep(batch); // warm-up: kernels and lazily created tensors
    engine.trainStep(batch);
    const steady = tf.memory().numTensors;
    engine.trainStep(batch);
    engine.trainStep(batch);
    assertEquals(tf.memory().numTensors, steady, `${head.task}: trainStep`);
    engine.forward(batch, { wantHidden: true, mlmLogits: true });
    engine.evaluate(batch);
    engine.gradients(batch);
    assertEquals(tf.memory().numTensors, steady, `${head.task}: forward/evaluate/gradients`);
    engine.setWeights(engine.getWeights());
    engine.setTrainState(engine.getTrainState());
    assertEquals(tf.memory().numTensors, steady, `${head.task}: setWeights/setTrainState`);
    engine.dispose();
    assertEquals(tf.memory().numTensors, before, `${head.task}: dispose releases everything`);
  }
});

Deno.test("TfjsEngine trains deterministically with dropout and resumes bit-identically from its state", async () => {
  const head: HeadSpec = { task: "pretrain" };
  const batch = batchFor(head);
  const optimizer = { lr: 1e-3, warmupSteps: 1, totalSteps: 10 };
  const a = await createTfjsEngine({ config, head, seed: 9, optimizer });
  const b = await createTfjsEngine({ config, head, seed: 9, optimizer });
  const lossesA = [0, 1, 2].map(() => a.trainStep(batch).loss);
  // b stops after one step, and a fresh engine takes over from its weights and state.
  b.trainStep(batch);
  const c = await createTfjsEngine({ config, head, seed: 123, optimizer });
  c.setWeights(b.getWeights());
  c.setTrainState(b.getTrainState());
  const lossesC = [c.trainStep(batch).loss, c.trainStep(batch).loss];
  assertEquals(lossesC, lossesA.slice(1));
  const q = "bert.encoder.layer.1.attention.self.query.weight";
  assertEquals(c.getWeights().get(q)!.data, a.getWeights().get(q)!.data);
  // A different seed gives different dropout masks.
  const d = await createTfjsEngine({ config, head, seed: 10, optimizer });
  d.setWeights(initWeights(config, head, 9));
  assertNotEquals(d.trainStep(batch).loss, lossesA[0]);
  for (const e of [a, b, c, d]) e.dispose();
});

Deno.test("TfjsEngine fits a tiny batch for every head (loss falls, accuracy counted)", async () => {
  for (const head of HEADS) {
    const engine = await createTfjsEngine({
      config: { ...config, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 },
      head,
      seed: 1,
      optimizer: { lr: 3e-3, totalSteps: 40, weightDecay: 0 },
    });
    const batch = batchFor(head);
    const first = engine.evaluate(batch);
    for (let i = 0; i < 25; i++) engine.trainStep(batch);
    const last = engine.evaluate(batch);
    assert(last.loss < first.loss * 0.5, `${head.task}: loss ${first.loss} -> ${last.loss}`);
    if (head.task === "pretrain") assertEquals(last.mlmCorrect, last.mlmCount);
    else assertEquals(last.correct, last.count, `${head.task}: fits the batch`);
    const out = engine.forward(batch);
    if (head.task === "ner") {
      assertEquals(out.paths!.length, batch.B * batch.T);
      assertEquals(out.paths![2 * batch.T - 1], -1, "padding gets no tag");
    }
    engine.dispose();
  }
});

Deno.test("TfjsEngine refuses bad batches and weights with the field and value", async () => {
  const head: HeadSpec = { task: "classify", numLabels: 3 };
  const engine = await createTfjsEngine({ config, head, maxSeqLen: 8 });
  const batch = batchFor(head);
  assertThrows(
    () => engine.forward({ ...batch, inputIds: batch.inputIds.map(() => 99) }),
    InvalidArgument,
    "inputIds[0]",
  );
  assertThrows(
    () => engine.trainStep({ ...batch, labels: undefined } as Batch),
    InvalidArgument,
    "labels is required",
  );
  assertThrows(() => engine.forward(batchFor(head, 1, 9)), InvalidArgument, "maxSeqLen 8");
  const weights = engine.getWeights();
  weights.delete("classifier.bias");
  assertThrows(() => engine.setWeights(weights), InvalidArgument, "missing 'classifier.bias' [3]");
  engine.setWeights(weights, { allowMissingHead: true });
  engine.dispose();
  await assertRejects(
    () => createTfjsEngine({ config, head, backend: "tensorflow" }),
    Unavailable,
    "tfjs-node",
  );
  await assertRejects(
    () => createTfjsEngine({ config, head, optimizer: { gradAccumSteps: 0 } }),
    InvalidArgument,
    "gradAccumSteps",
  );
});

Deno.test("learning rate warms up linearly from 0 then decays linearly to 0 (HF schedule)", () => {
  const opt = { ...DEFAULT_OPTIMIZER, lr: 1, warmupSteps: 4, totalSteps: 12 };
  assertEquals([0, 1, 2, 4, 8, 12, 13].map((s) => scheduledLearningRate(opt, s)), [
    0,
    0.25,
    0.5,
    1,
    0.5,
    0,
    0,
  ]);
});

// Last: switches tfjs' global backend to wasm.
Deno.test("the wasm backend loads from node_modules and agrees with cpu", async () => {
  const head: HeadSpec = { task: "ner", numLabels: 5 };
  const batch = batchFor(head);
  const cpu = await createTfjsEngine({ config, head, seed: 2, backend: "cpu" });
  const expected = cpu.forward(batch).logits;
  const weights = cpu.getWeights();
  cpu.dispose();
  const wasm = await createTfjsEngine({ config, head, seed: 2, backend: "wasm" });
  assertEquals(wasm.backend, "wasm");
  assertEquals(tf.getBackend(), "wasm");
  wasm.setWeights(weights);
  const got = wasm.forward(batch).logits;
  const diff = got.reduce((m, x, i) => Math.max(m, Math.abs(x - expected[i]!)), 0);
  assert(diff < 1e-4, `wasm vs cpu logits differ by ${diff}`);
  // Training runs on wasm too (embedding gradients through ScatterNd) and matches cpu.
  const cpuAgain = await createTfjsEngine({
    config: { ...config, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 },
    head,
    seed: 2,
    backend: "cpu",
  });
  cpuAgain.setWeights(weights);
  const cpuGrads = cpuAgain.gradients(batch);
  cpuAgain.dispose();
  await useBackend("wasm");
  const wasmGrads = wasm.gradients(batch);
  for (const [name, g] of cpuGrads) {
    const d = wasmGrads.get(name)!.data.reduce((m, x, i) => Math.max(m, Math.abs(x - g.data[i]!)), 0);
    assert(d < 1e-4, `wasm vs cpu gradient of ${name} differs by ${d}`);
  }
  assert(Number.isFinite(wasm.trainStep(batch).loss));
  wasm.dispose();
  await tf.setBackend("cpu");
});

Deno.test("TfjsEngine in mode serve holds no optimizer state, refuses training, serves the same outputs", async () => {
  const head: HeadSpec = { task: "classify", numLabels: 3 };
  const before = tf.memory().numTensors;
  const train = await createTfjsEngine({ config, head, seed: 4 });
  const trainTensors = tf.memory().numTensors - before;
  const serve = await createTfjsEngine({ config, head, seed: 4, mode: "serve" });
  const serveTensors = tf.memory().numTensors - before - trainTensors;
  try {
    // AdamW keeps m and v per weight: a training engine holds three tensors for each one a server needs.
    assertEquals(trainTensors, 3 * serveTensors);
    const batch = batchFor(head);
    assertEquals(serve.forward(batch, { wantHidden: true }), train.forward(batch, { wantHidden: true }));
    assertEquals(serve.evaluate(batch), train.evaluate(batch));
    assertThrows(() => serve.trainStep(batch), FailedPrecondition, "trainStep needs a training engine");
    assertThrows(() => serve.getTrainState(), FailedPrecondition, "getTrainState");
    assertThrows(() => serve.setTrainState(train.getTrainState()), FailedPrecondition, "setTrainState");
  } finally {
    train.dispose();
    serve.dispose();
  }
  assertEquals(tf.memory().numTensors, before);
});

Deno.test("TfjsEngine drops out a head's input by classifier_dropout when the config sets it, as HF and the native engine", async () => {
  const quiet = { ...config, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  for (const head of [{ task: "classify", numLabels: 3 }, { task: "ner", numLabels: 5 }] as HeadSpec[]) {
    const batch = batchFor(head);
    // A training step's loss (taken before the update) equals the evaluation loss only when nothing drops out.
    const gap = async (classifierDropout?: number) => {
      const engine = await createTfjsEngine({
        config: classifierDropout === undefined ? quiet : { ...quiet, classifier_dropout: classifierDropout },
        head,
        seed: 3,
      });
      const evaluated = engine.evaluate(batch).loss, trained = engine.trainStep(batch).loss;
      engine.dispose();
      return Math.abs(trained - evaluated);
    };
    assert(await gap() < 1e-6, `${head.task}: no dropout anywhere`);
    assert(await gap(0.5) > 1e-4, `${head.task}: classifier_dropout 0.5 drops the head's input`);
  }
});

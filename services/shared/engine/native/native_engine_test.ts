/**
 * Native engine: gradient checks by central differences for every head (dropout off), determinism, resume,
 * arena limits and setWeights errors. Sizes are small and odd (after google-research/bert modeling_test.py)
 * so a swapped dimension fails loudly: B=3, T=7, V=99, C=32, NH=4, F=37, L=2.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { FailedPrecondition, InvalidArgument } from "../../errors.ts";
import type { BertConfig } from "../../model/config.ts";
import type { Batch, HeadSpec } from "../engine.ts";
import { createTfjsEngine } from "../tfjs/mod.ts";
import { NativeEngine } from "./native_engine.ts";

const B = 3, T = 7, V = 99, K = 5;

export function tinyConfig(overrides: Partial<BertConfig> = {}): BertConfig {
  return {
    vocab_size: V,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    intermediate_size: 37,
    hidden_act: "gelu",
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    max_position_embeddings: 16,
    type_vocab_size: 2,
    // larger than BERT's 0.02 so gradients stand well above float32 noise in the differences
    initializer_range: 0.2,
    layer_norm_eps: 1e-12,
    pad_token_id: 0,
    ...overrides,
  };
}

/** Deterministic pseudo-random ints. */
function ints(n: number, hi: number, seed: number): Int32Array {
  let s = seed >>> 0;
  return Int32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % hi;
  });
}

export function tinyBatch(head: HeadSpec, seed = 7): Batch {
  const NT = B * T;
  const inputIds = ints(NT, V - 1, seed).map((x) => x + 1);
  // padding at the end of the last sequence
  const attentionMask = new Int32Array(NT).fill(1);
  attentionMask.fill(0, NT - 2);
  inputIds.fill(0, NT - 2);
  const tokenTypeIds = Int32Array.from({ length: NT }, (_, i) => (i % T >= 4 ? 1 : 0));
  const batch: Batch = { B, T, inputIds, tokenTypeIds, attentionMask };
  const r = ints(NT, 1000, seed + 1);
  switch (head.task) {
    case "pretrain":
      batch.mlmLabels = Int32Array.from(
        { length: NT },
        (_, i) => (r[i] % 3 === 0 && attentionMask[i] ? r[i] % V : -100),
      );
      batch.mlmLabels[2] = 5; // at least one
      batch.nspLabels = new Int32Array([0, 1, 1]);
      break;
    case "classify":
    case "pair":
      batch.labels = new Int32Array([0, 3, 4]);
      break;
    case "multilabel":
      batch.multiLabels = Float32Array.from({ length: B * K }, (_, i) => r[i] % 2);
      break;
    case "ner":
      batch.tokenLabels = Int32Array.from({ length: NT }, (_, i) => {
        if (!attentionMask[i] || i % T === 0) return -100; // [CLS] and padding ignored
        return i % 5 === 3 ? -100 : r[i] % K; // a continuation piece now and then
      });
      break;
    case "qa":
      // an answer span, a one-token answer, and [CLS] (no answer in the window) in the padded row
      batch.startPositions = new Int32Array([2, 5, 0]);
      batch.endPositions = new Int32Array([4, 5, 0]);
      break;
  }
  return batch;
}

function lcgDirection(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s & 1 ? 1 : -1;
  });
}

/**
 * For every parameter tensor: the directional derivative along a random ±1 direction by central differences
 * against g·d from backward. eps is scaled so the step has norm ~0.05 whatever the tensor size.
 */
function gradCheck(
  head: HeadSpec,
  kernels: "c" | "ts" = "c",
  dropout = false,
  config: BertConfig = tinyConfig(),
  /** Changes the batch before the check (e.g. drops the NSP labels for MLM-only pretraining). */
  adjust: (batch: Batch) => void = () => {},
): Map<string, { data: Float32Array }> {
  const engine = new NativeEngine({
    config,
    head,
    seed: 3,
    maxBatch: B,
    maxSeqLen: T,
    kernels,
  });
  const batch = tinyBatch(head);
  adjust(batch);
  // with dropout the masks of one RNG counter are held fixed, so the loss stays a smooth function of the weights
  const loss = () => dropout ? engine.computeGradients(batch, true, 12345).loss : engine.evaluate(batch).loss;
  engine.computeGradients(batch, dropout, 12345);
  const grads = engine.getGradients(); // a copy: the loss evaluations below overwrite the engine's gradients
  const failures: string[] = [];
  let checked = 0;
  for (const name of engine.parameterNames()) {
    const w = engine.parameterView(name);
    const g = grads.get(name)!.data;
    const d = lcgDirection(w.length, name.length * 131 + w.length);
    if (name === "bert.embeddings.word_embeddings.weight") d.fill(0, 0, 32); // padding row: no gradient by design
    let analytic = 0;
    for (let i = 0; i < w.length; i++) analytic += g[i] * d[i];
    const eps = 0.05 / Math.sqrt(w.length);
    const base = Float32Array.from(w);
    for (let i = 0; i < w.length; i++) w[i] = base[i] + eps * d[i];
    const plus = loss();
    for (let i = 0; i < w.length; i++) w[i] = base[i] - eps * d[i];
    const minus = loss();
    w.set(base);
    const numeric = (plus - minus) / (2 * eps);
    const tol = 0.03 * Math.max(Math.abs(analytic), Math.abs(numeric)) + 2e-3;
    checked++;
    if (!(Math.abs(numeric - analytic) <= tol)) {
      failures.push(`${name}: numeric ${numeric.toExponential(4)} analytic ${analytic.toExponential(4)}`);
    }
  }
  engine.dispose();
  assert(checked > 10);
  assertEquals(failures, [], `gradient mismatches for ${JSON.stringify(head)}`);
  return grads;
}

Deno.test("native engine: gradients match finite differences, pretrain head (MLM + NSP)", () => {
  gradCheck({ task: "pretrain" });
});
Deno.test("native engine: gradients match finite differences, pretrain head with MLM alone (objective mlm)", () => {
  const grads = gradCheck({ task: "pretrain" }, "c", false, tinyConfig(), (batch) => delete batch.nspLabels);
  // Without NSP labels nothing reaches the pooler or the NSP classifier: they get no gradient at all.
  for (const [name, g] of grads) {
    if (name.startsWith("bert.pooler.") || name.startsWith("cls.seq_relationship.")) {
      assert(g.data.every((x) => x === 0), `${name} has a gradient without NSP`);
    }
  }
  assert([...grads.values()].some((g) => g.data.some((x) => x !== 0)));
});
Deno.test("native engine: gradients match finite differences, classify head", () => {
  gradCheck({ task: "classify", numLabels: K });
});
Deno.test("native engine: gradients match finite differences, pair head", () => {
  gradCheck({ task: "pair", numLabels: K });
});
Deno.test("native engine: gradients match finite differences, multilabel head", () => {
  gradCheck({ task: "multilabel", numLabels: K });
});
Deno.test("native engine: gradients match finite differences, classify and pair heads with mean pooling", () => {
  gradCheck({ task: "classify", numLabels: K, pooling: "mean" });
  gradCheck({ task: "pair", numLabels: K, pooling: "mean" }, "c", true);
});
Deno.test("native engine: gradients match finite differences, ner head", () => {
  gradCheck({ task: "ner", numLabels: K });
});
Deno.test("native engine: gradients match finite differences, ner head with CRF", () => {
  gradCheck({ task: "ner", numLabels: K, crf: true });
});
Deno.test("native engine: gradients match finite differences, qa head (start and end cross-entropies)", () => {
  const grads = gradCheck({ task: "qa" });
  // BertForQuestionAnswering has no pooler, and its span head is qa_outputs (2, C)
  assertEquals([...grads.keys()].filter((n) => n.startsWith("bert.pooler")), []);
  assertEquals(grads.get("qa_outputs.weight")!.data.length, 2 * tinyConfig().hidden_size);
});
Deno.test("native engine: qa gradients with dropout masks held fixed, with TypeScript kernels, and pre-LN", () => {
  gradCheck({ task: "qa" }, "c", true);
  gradCheck({ task: "qa" }, "ts");
  gradCheck({ task: "qa" }, "c", false, tinyConfig({ bertforge_layer_norm: "pre" }));
});
Deno.test("native engine: qa forward gives (B, T, 2) logits split into start and end; the loss is their mean CE", () => {
  const engine = new NativeEngine({
    config: tinyConfig(),
    head: { task: "qa" },
    seed: 5,
    maxBatch: B,
    maxSeqLen: T,
  });
  const batch = tinyBatch({ task: "qa" });
  const out = engine.forward(batch);
  assertEquals(out.logits.length, B * T * 2);
  for (let i = 0; i < B * T; i++) {
    assertEquals(out.startLogits![i], out.logits[2 * i]);
    assertEquals(out.endLogits![i], out.logits[2 * i + 1]);
  }
  // the loss by hand from the logits: log-softmax over each row's T positions, padding included (as HF)
  const ce = (logits: Float32Array, b: number, label: number) => {
    const row = Array.from(logits.subarray(b * T, (b + 1) * T));
    const max = Math.max(...row);
    return Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0)) + max - row[label]!;
  };
  let expected = 0;
  for (let b = 0; b < B; b++) {
    expected +=
      (ce(out.startLogits!, b, batch.startPositions![b]!) + ce(out.endLogits!, b, batch.endPositions![b]!)) /
      (2 * B);
  }
  const stats = engine.evaluate(batch);
  assert(Math.abs(stats.loss - expected) < 1e-5, `loss ${stats.loss} vs ${expected}`);
  assertEquals(stats.count, 2 * B);
  // a position past the row is refused, naming the field
  assertThrows(
    () => engine.evaluate({ ...batch, endPositions: new Int32Array([1, 2, T]) }),
    Error,
    "endPositions[2] must be in [0, " + T + ")",
  );
  engine.dispose();
});
for (
  const head of [{ task: "pretrain" }, { task: "classify", numLabels: K }, {
    task: "ner",
    numLabels: K,
  }] as HeadSpec[]
) {
  Deno.test(`native engine: gradients match finite differences with dropout masks held fixed, ${head.task} head`, () => {
    gradCheck(head, "c", true);
  });
}

Deno.test("native engine: gradients match finite differences with the TypeScript kernels", () => {
  gradCheck({ task: "pretrain" }, "ts");
});

const preLN = () => tinyConfig({ bertforge_layer_norm: "pre" });
for (
  const head of [
    { task: "pretrain" },
    { task: "classify", numLabels: K },
    { task: "classify", numLabels: K, pooling: "mean" },
    { task: "ner", numLabels: K, crf: true },
  ] as HeadSpec[]
) {
  const what = `${head.task}${head.pooling ? " mean-pooling" : ""}${head.crf ? " CRF" : ""} head`;
  Deno.test(`native engine: pre-LN gradients match finite differences, ${what}`, () => {
    gradCheck(head, "c", false, preLN());
  });
}
Deno.test("native engine: pre-LN gradients match finite differences with dropout masks held fixed", () => {
  gradCheck({ task: "pretrain" }, "c", true, preLN());
  gradCheck({ task: "ner", numLabels: K }, "c", true, preLN());
});
Deno.test("native engine: pre-LN gradients match finite differences with the TypeScript kernels", () => {
  gradCheck({ task: "pretrain" }, "ts", true, preLN());
});

function trainRun(steps: number, kernels: "c" | "ts" = "c", resumeAt = -1): Float32Array {
  const head: HeadSpec = { task: "pretrain" };
  const opts = {
    config: tinyConfig(),
    head,
    seed: 11,
    maxBatch: B,
    maxSeqLen: T,
    kernels,
    optimizer: { lr: 1e-3, warmupSteps: 2, totalSteps: steps, gradAccumSteps: 2 },
  };
  let engine = new NativeEngine(opts);
  for (let s = 0; s < steps * 2; s++) {
    if (s === resumeAt) {
      // a fresh process: new engine, weights and train state carried over
      const weights = engine.getWeights(), state = engine.getTrainState();
      engine.dispose();
      engine = new NativeEngine({ ...opts, seed: 999 });
      engine.setWeights(weights);
      // the RNG state travels as JSON in checkpoints
      engine.setTrainState({ ...state, rng: JSON.parse(JSON.stringify(state.rng)) });
    }
    engine.trainStep(tinyBatch(head, 100 + s));
  }
  const flat = Float32Array.from(engine.getWeights().values().flatMap((t) => t.data));
  engine.dispose();
  return flat;
}

Deno.test("native engine: the same seed gives bit-identical weights after N steps", () => {
  const a = trainRun(4), b = trainRun(4);
  assertEquals(a, b);
});

Deno.test("native engine: restoring weights + train state mid-run equals the uninterrupted run", () => {
  const straight = trainRun(4);
  const resumed = trainRun(4, "c", 4);
  assertEquals(resumed, straight);
});

Deno.test("native engine: C and TypeScript kernels train to the same weights (1e-4)", () => {
  const c = trainRun(2, "c"), ts = trainRun(2, "ts");
  let worst = 0;
  for (let i = 0; i < c.length; i++) worst = Math.max(worst, Math.abs(c[i] - ts[i]));
  assert(worst < 1e-4, `largest difference ${worst}`);
});

Deno.test("native engine: a batch over the preallocated size is refused naming both sizes", () => {
  const engine = new NativeEngine({
    config: tinyConfig(),
    head: { task: "classify", numLabels: K },
    maxBatch: 2,
    maxSeqLen: 7,
  });
  const batch = tinyBatch({ task: "classify", numLabels: K });
  const err = assertThrows(() => engine.trainStep(batch), InvalidArgument);
  assert(err.message.includes("21") && err.message.includes("14"), err.message);
  const long = { ...batch, B: 1, T: 21 };
  const err2 = assertThrows(() => engine.forward(long), InvalidArgument);
  assert(err2.message.includes("maxSeqLen = 7") && err2.message.includes("T = 21"), err2.message);
  engine.dispose();
});

Deno.test("native engine: setWeights names missing, unexpected and misshapen tensors", () => {
  const head: HeadSpec = { task: "classify", numLabels: K };
  const engine = new NativeEngine({ config: tinyConfig(), head, maxBatch: B, maxSeqLen: T });
  const weights = engine.getWeights();
  const missing = new Map(weights);
  missing.delete("bert.encoder.layer.1.output.dense.bias");
  const e1 = assertThrows(() => engine.setWeights(missing), InvalidArgument);
  assert(e1.message.includes("bert.encoder.layer.1.output.dense.bias"), e1.message);
  const extra = new Map(weights);
  extra.set("bert.encoder.layer.7.output.dense.bias", { shape: [32], data: new Float32Array(32) });
  const e2 = assertThrows(() => engine.setWeights(extra), InvalidArgument);
  assert(e2.message.includes("bert.encoder.layer.7.output.dense.bias"), e2.message);
  const bad = new Map(weights);
  bad.set("classifier.weight", { shape: [4, 32], data: new Float32Array(128) });
  const e3 = assertThrows(() => engine.setWeights(bad), InvalidArgument);
  assert(e3.message.includes("classifier.weight") && e3.message.includes("5,32"), e3.message);
  // a pretraining checkpoint fine-tunes: head tensors absent with allowMissingHead, cls.* ignored
  const pretrained = new Map([...weights].filter(([n]) => !n.startsWith("classifier")));
  pretrained.set("cls.predictions.bias", { shape: [V], data: new Float32Array(V) });
  engine.setWeights(pretrained, { allowMissingHead: true });
  assertThrows(() => engine.setWeights(pretrained), InvalidArgument, "classifier.weight");
  engine.dispose();
});

Deno.test("native engine: forward outputs have the documented shapes; CRF paths stop at padding", () => {
  const ner = new NativeEngine({
    config: tinyConfig(),
    head: { task: "ner", numLabels: K, crf: true },
    maxBatch: B,
    maxSeqLen: T,
  });
  const batch = tinyBatch({ task: "ner", numLabels: K });
  const out = ner.forward(batch, { wantHidden: true });
  assertEquals(out.logits.length, B * T * K);
  assertEquals(out.hidden!.length, B * T * 32);
  assertEquals(out.paths!.length, B * T);
  assertEquals([...out.paths!.subarray(B * T - 2)], [-1, -1]);
  assert([...out.paths!.subarray(0, T)].every((k) => k >= 0 && k < K));
  ner.dispose();
  const pre = new NativeEngine({
    config: tinyConfig(),
    head: { task: "pretrain" },
    maxBatch: B,
    maxSeqLen: T,
  });
  const p = pre.forward(tinyBatch({ task: "pretrain" }), { mlmLogits: true, wantHidden: true });
  assertEquals(p.logits.length, B * T * V);
  assertEquals(p.nspLogits!.length, B * 2);
  assertEquals(p.pooled!.length, B * 32);
  pre.dispose();
});

Deno.test("native engine: a mean-pooling head reads the mean of the real tokens' last layer, as tfjs does", async () => {
  const head: HeadSpec = { task: "classify", numLabels: K, pooling: "mean" };
  const engine = new NativeEngine({ config: tinyConfig(), head, seed: 4, maxBatch: B, maxSeqLen: T });
  assert(!engine.parameterNames().some((n) => n.startsWith("bert.pooler.")), "no pooler tensors");
  const batch = tinyBatch(head); // the last row ends in 2 padding tokens
  const out = engine.forward(batch, { wantHidden: true });
  const C = 32, weights = engine.getWeights();
  const W = weights.get("classifier.weight")!.data, bias = weights.get("classifier.bias")!.data;
  for (let b = 0; b < B; b++) {
    const real = [...Array(T).keys()].filter((t) => batch.attentionMask[b * T + t]);
    for (let c = 0; c < C; c++) {
      const mean = real.reduce((sum, t) => sum + out.hidden![(b * T + t) * C + c], 0) / real.length;
      assert(
        Math.abs(out.pooled![b * C + c] - mean) < 1e-5,
        `row ${b} unit ${c}: ${out.pooled![b * C + c]} vs ${mean}`,
      );
    }
    for (let k = 0; k < K; k++) {
      let logit = bias[k];
      for (let c = 0; c < C; c++) logit += W[k * C + c] * out.pooled![b * C + c];
      assert(Math.abs(out.logits[b * K + k] - logit) < 1e-4, `row ${b} logit ${k}`);
    }
  }
  const tfjs = await createTfjsEngine({ config: tinyConfig(), head, backend: "cpu" });
  tfjs.setWeights(weights);
  const other = tfjs.forward(batch);
  for (let i = 0; i < B * K; i++) {
    assert(
      Math.abs(other.logits[i] - out.logits[i]) < 1e-4,
      `logit ${i}: tfjs ${other.logits[i]} native ${out.logits[i]}`,
    );
  }
  tfjs.dispose();
  engine.dispose();
  assertThrows(
    () =>
      new NativeEngine({
        config: tinyConfig(),
        head: { task: "ner", numLabels: K, pooling: "mean" },
        maxBatch: B,
        maxSeqLen: T,
      }),
    InvalidArgument,
    "head pooling is for tasks classify, multilabel and pair",
  );
});

Deno.test("native engine: the qa head agrees with tfjs on logits, loss, every gradient and two AdamW steps", async () => {
  const head: HeadSpec = { task: "qa" };
  const optimizer = { lr: 1e-3, warmupSteps: 0, totalSteps: 10 };
  const config = tinyConfig({ hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 });
  const engine = new NativeEngine({ config, head, seed: 6, maxBatch: B, maxSeqLen: T, optimizer });
  const tfjs = await createTfjsEngine({ config, head, backend: "cpu", optimizer });
  tfjs.setWeights(engine.getWeights());
  const batch = tinyBatch(head);
  const close = (a: ArrayLike<number>, b: ArrayLike<number>, what: string, tolerance = 1e-4) => {
    assertEquals(a.length, b.length, what);
    for (let i = 0; i < a.length; i++) {
      assert(Math.abs(a[i]! - b[i]!) <= tolerance, `${what} [${i}]: native ${a[i]} tfjs ${b[i]}`);
    }
  };
  const [mine, theirs] = [engine.forward(batch), tfjs.forward(batch)];
  close(mine.logits, theirs.logits, "logits (B, T, 2)");
  close(mine.startLogits!, theirs.startLogits!, "start logits");
  close(mine.endLogits!, theirs.endLogits!, "end logits");
  close([engine.evaluate(batch).loss], [tfjs.evaluate(batch).loss], "loss");
  engine.computeGradients(batch);
  const grads = engine.getGradients(), other = tfjs.gradients(batch);
  assertEquals([...grads.keys()].sort(), [...other.keys()].sort());
  for (const [name, g] of grads) {
    if (name.includes("attention.self.key.bias")) continue; // shifts whole softmax rows: its true gradient is 0
    const scale = Math.max(1e-3, ...Array.from(g.data, Math.abs));
    close(g.data, other.get(name)!.data, `gradient of ${name}`, 1e-3 * scale);
  }
  for (let s = 0; s < 2; s++) {
    close([engine.trainStep(batch).loss], [tfjs.trainStep(batch).loss], `step ${s} loss`);
  }
  const after = tfjs.getWeights();
  for (const [name, w] of engine.getWeights()) close(w.data, after.get(name)!.data, `${name} after 2 steps`);
  tfjs.dispose();
  engine.dispose();
});

Deno.test("native engine: more labels than hidden units (K > C) with a CRF", () => {
  const head: HeadSpec = { task: "ner", numLabels: 41, crf: true };
  const optimizer = { lr: 3e-3, totalSteps: 100 };
  const engine = new NativeEngine({ config: tinyConfig(), head, maxBatch: B, maxSeqLen: T, optimizer });
  const batch = tinyBatch(head);
  batch.tokenLabels = batch.tokenLabels!.map((y, i) => (y < 0 ? y : (y * 7 + i) % 41));
  const first = engine.evaluate(batch).loss;
  for (let s = 0; s < 10; s++) engine.trainStep(batch);
  const last = engine.evaluate(batch).loss;
  assert(last < first, `loss goes down on a repeated batch: ${first} -> ${last}`);
  engine.dispose();
});

Deno.test("native engine: a fully padded row, T=1 and a batch without masked positions stay finite", () => {
  const heads: HeadSpec[] = [
    { task: "pretrain" },
    { task: "ner", numLabels: K, crf: true },
    { task: "classify", numLabels: K, pooling: "mean" },
  ];
  for (const head of heads) {
    const engine = new NativeEngine({ config: tinyConfig(), head, seed: 2, maxBatch: B, maxSeqLen: T });
    const batch = tinyBatch(head);
    batch.attentionMask.fill(0, T, 2 * T); // row 1: padding only
    if (batch.mlmLabels) batch.mlmLabels.fill(-100);
    for (let s = 0; s < 2; s++) assert(Number.isFinite(engine.trainStep(batch).loss));
    const one = tinyBatch(head);
    const short: Batch = {
      B: 1,
      T: 1,
      inputIds: one.inputIds.subarray(0, 1),
      tokenTypeIds: one.tokenTypeIds.subarray(0, 1),
      attentionMask: one.attentionMask.subarray(0, 1),
      mlmLabels: new Int32Array([4]),
      nspLabels: new Int32Array([1]),
      tokenLabels: new Int32Array([2]),
      labels: new Int32Array([1]),
    };
    assert(Number.isFinite(engine.trainStep(short).loss));
    assert(engine.getWeights().values().every((t) => t.data.every(Number.isFinite)));
    engine.dispose();
  }
});

Deno.test("native engine: a serving engine holds no gradients or moments, refuses training, serves the same outputs", () => {
  const heads: HeadSpec[] = [
    { task: "pretrain" },
    { task: "classify", numLabels: K },
    { task: "multilabel", numLabels: K },
    { task: "ner", numLabels: K, crf: true },
  ];
  for (const head of heads) {
    const options = { config: tinyConfig(), head, seed: 5, maxBatch: B, maxSeqLen: T };
    const train = new NativeEngine(options);
    const serve = new NativeEngine({ ...options, mode: "serve" });
    serve.setWeights(train.getWeights());
    const batch = tinyBatch(head);
    const want = { wantHidden: true, mlmLogits: true };
    assertEquals(serve.forward(batch, want), train.forward(batch, want), `${head.task}: forward`);
    assertEquals(serve.evaluate(batch), train.evaluate(batch), `${head.task}: evaluate`);

    // What serving leaves out: the parameter-sized gradients, and the backward scratch of the arena.
    const paramBytes = 4 *
      train.parameterNames().reduce((n, name) => n + train.parameterView(name).length, 0);
    const saved = train.memoryBytes() - serve.memoryBytes();
    assert(
      saved > paramBytes,
      `${head.task}: serving saves ${saved} bytes, more than the ${paramBytes} of grads`,
    );
    const before = serve.memoryBytes();
    for (
      const [method, call] of [
        ["trainStep", () => serve.trainStep(batch)],
        ["computeGradients", () => serve.computeGradients(batch)],
        ["getGradients", () => serve.getGradients()],
        ["getTrainState", () => serve.getTrainState()],
        ["setTrainState", () => serve.setTrainState(train.getTrainState())],
      ] as const
    ) {
      assertThrows(
        call,
        FailedPrecondition,
        `${method} needs a training engine: this one was created with mode "serve"`,
      );
    }
    assertEquals(serve.memoryBytes(), before, `${head.task}: a refused call allocates nothing`);
    assertEquals(serve.forward(batch, want), train.forward(batch, want), `${head.task}: still serves`);
    train.dispose();
    serve.dispose();
  }
  assertThrows(
    () => new NativeEngine({ config: tinyConfig(), head: heads[0], mode: "infer" as "serve" }),
    InvalidArgument,
    "mode must be train|serve",
  );
});

Deno.test("native engine: pre-LN heads read the final LayerNorm; a post-LN checkpoint is refused; serving agrees; training learns", () => {
  const head: HeadSpec = { task: "pretrain" };
  const options = { config: preLN(), head, seed: 6, maxBatch: B, maxSeqLen: T };
  const engine = new NativeEngine({ ...options, optimizer: { lr: 3e-3, totalSteps: 100 } });
  const batch = tinyBatch(head);
  // LN_f = 2 * xhat + 3: every row of the hidden states the heads see has mean 3 and variance 4
  engine.parameterView("bert.encoder.LayerNorm.weight").fill(2);
  engine.parameterView("bert.encoder.LayerNorm.bias").fill(3);
  const C = 32, hidden = engine.forward(batch, { wantHidden: true }).hidden!;
  for (let r = 0; r < B * T; r++) {
    const row = hidden.subarray(r * C, (r + 1) * C);
    const mean = row.reduce((a, x) => a + x, 0) / C;
    const variance = row.reduce((a, x) => a + (x - mean) ** 2, 0) / C;
    assert(
      Math.abs(mean - 3) < 1e-4 && Math.abs(variance - 4) < 1e-3,
      `row ${r}: mean ${mean} var ${variance}`,
    );
  }

  const post = new NativeEngine({ ...options, config: tinyConfig() });
  assert(!post.parameterNames().includes("bert.encoder.LayerNorm.weight"), "post-LN has no final LayerNorm");
  assertThrows(() => engine.setWeights(post.getWeights()), InvalidArgument, "bert.encoder.LayerNorm.weight");
  // the same shared tensors compute another function: the layout differs, not only the extra tensor
  const shared = new Map([...engine.getWeights()].filter(([n]) => !n.startsWith("bert.encoder.LayerNorm")));
  post.setWeights(shared);
  const a = engine.forward(batch).nspLogits!, b = post.forward(batch).nspLogits!;
  assert(a.some((x, i) => Math.abs(x - b[i]) > 1e-3), "pre-LN and post-LN outputs differ");
  post.dispose();

  const serve = new NativeEngine({ ...options, mode: "serve" });
  serve.setWeights(engine.getWeights());
  const want = { wantHidden: true, mlmLogits: true };
  assertEquals(serve.forward(batch, want), engine.forward(batch, want));
  serve.dispose();

  const first = engine.evaluate(batch).loss;
  for (let s = 0; s < 10; s++) engine.trainStep(batch);
  const last = engine.evaluate(batch).loss;
  assert(last < first - 0.5, `loss goes down on a repeated batch: ${first} -> ${last}`);
  engine.dispose();
});

Deno.test("native engine: a packed row's MLM loss is its own, whatever padding or other rows share the batch", () => {
  // Packing's one short row (the end of a block) is padded to T; a full row is another text entirely. Either way
  // the loss of a one-document row must equal the same row trained alone and unpadded.
  const config = tinyConfig({ hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 });
  const engine = new NativeEngine({
    config,
    head: { task: "pretrain" },
    seed: 3,
    maxBatch: 2,
    maxSeqLen: 12,
  });
  const ids = Int32Array.from([2, 11, 4, 13, 14, 4, 16, 3]); // [CLS] ... [SEP], [MASK]s at 2 and 5
  const labels = Int32Array.from([-100, -100, 12, -100, -100, 15, -100, -100]);
  const row = (T: number, padded: number[]) => {
    const out = {
      inputIds: new Int32Array(T),
      mask: new Int32Array(T),
      labels: new Int32Array(T).fill(-100),
    };
    out.inputIds.set(padded.length ? padded : ids);
    out.mask.fill(1, 0, ids.length);
    out.labels.set(labels);
    return out;
  };
  const alone = row(8, []);
  const lossAlone = engine.evaluate({
    B: 1,
    T: 8,
    inputIds: alone.inputIds,
    tokenTypeIds: new Int32Array(8),
    attentionMask: alone.mask,
    mlmLabels: alone.labels,
  }).loss;
  // The same row padded to 12, beside a full row without predictions.
  const padded = row(12, [...ids]);
  const other = Int32Array.from({ length: 12 }, (_, i) => 20 + i);
  const batch: Batch = {
    B: 2,
    T: 12,
    inputIds: Int32Array.from([...padded.inputIds, ...other]),
    tokenTypeIds: new Int32Array(24),
    attentionMask: Int32Array.from([...padded.mask, ...new Int32Array(12).fill(1)]),
    mlmLabels: Int32Array.from([...padded.labels, ...new Int32Array(12).fill(-100)]),
  };
  const lossPacked = engine.evaluate(batch).loss;
  engine.dispose();
  assert(Math.abs(lossPacked - lossAlone) < 1e-5, `${lossPacked} vs ${lossAlone}`);
});

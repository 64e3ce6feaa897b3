/**
 * Parity of bertforge's engines with an independent PyTorch BERT (fixtures written by make_fixtures.py, committed
 * under fixtures/): forward logits, losses, gradients of every tensor and weights after AdamW steps with warmup,
 * decay and clipping, for every head and for a pre-LN encoder, on both engines. Then native against tfjs on the
 * same weights, when the native engine is there.
 *
 * Tolerances: 1e-4 absolute on logits, losses and weights (float32 on both sides); gradients 1e-4 relative to
 * the largest gradient of each tensor.
 */
import { assert, assertEquals } from "@std/assert";
import { fromFileUrl, join } from "@std/path";
import type {
  Batch,
  Engine,
  EngineOptions,
  OptimizerConfig,
  Weights,
} from "../../services/shared/engine/engine.ts";
import { createTfjsEngine, type TfjsEngine } from "../../services/shared/engine/tfjs/mod.ts";
import { loadModelDir } from "../../services/shared/model/checkpoint.ts";
import { readSafetensors } from "../../services/shared/model/safetensors.ts";
import type { HeadSpec } from "../../services/shared/engine/engine.ts";

const FIXTURES = fromFileUrl(new URL("./fixtures/", import.meta.url));
// pretrain_preln: config bertforge_layer_norm "pre" (pre-LN layers + the final bert.encoder.LayerNorm)
const CASES = ["pretrain", "classify", "multilabel", "ner", "ner_crf", "classify_mean", "pretrain_preln"];
const TOLERANCE = 1e-4;

interface Expected {
  head: HeadSpec;
  loss: number;
  logits: number[];
  nspLogits?: number[];
  paths?: number[];
  optimizer: OptimizerConfig;
  steps: number;
  learningRates: number[];
  stepLosses: number[];
}

interface Fixture {
  dir: string;
  expected: Expected;
  batch: Batch;
  options: EngineOptions;
  weights: Weights;
}

function toBatch(raw: Record<string, unknown>): Batch {
  const ints = (k: string) => (raw[k] ? Int32Array.from(raw[k] as number[]) : undefined);
  const batch: Batch = {
    B: raw.B as number,
    T: raw.T as number,
    inputIds: ints("inputIds")!,
    tokenTypeIds: ints("tokenTypeIds")!,
    attentionMask: ints("attentionMask")!,
  };
  for (
    const k of ["mlmLabels", "nspLabels", "labels", "tokenLabels", "startPositions", "endPositions"] as const
  ) {
    const v = ints(k);
    if (v) batch[k] = v;
  }
  if (raw.multiLabels) batch.multiLabels = Float32Array.from(raw.multiLabels as number[]);
  return batch;
}

async function loadFixture(name: string): Promise<Fixture> {
  const dir = join(FIXTURES, name);
  const expected = JSON.parse(await Deno.readTextFile(join(dir, "expected.json"))) as Expected;
  const model = await loadModelDir(dir);
  assertEquals(model.head, expected.head, `${name}: config.json describes the head`);
  const batch = toBatch(JSON.parse(await Deno.readTextFile(join(dir, "inputs.json"))));
  const options: EngineOptions = {
    config: model.config,
    head: expected.head,
    optimizer: expected.optimizer,
    seed: 1,
  };
  return { dir, expected, batch, options, weights: model.weights };
}

/** Largest |a - b| over two arrays of equal length, and where. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): { diff: number; at: number } {
  assertEquals(a.length, b.length, "lengths differ");
  let diff = 0, at = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= diff)) (diff = d), (at = i);
  }
  return { diff, at };
}

function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  what: string,
  tolerance = TOLERANCE,
) {
  const { diff, at } = maxDiff(actual, expected);
  assert(
    diff <= tolerance,
    `${what}: max |diff| ${diff.toExponential(2)} at ${at} (${actual[at]} vs ${expected[at]}) > ${tolerance}`,
  );
}

function assertWeightsClose(actual: Weights, expected: Weights, what: string, tolerance = TOLERANCE) {
  assertEquals([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: tensor names`);
  for (const [name, t] of expected) {
    assertEquals(actual.get(name)!.shape, t.shape, `${what} ${name}: shape`);
    assertClose(actual.get(name)!.data, t.data, `${what} ${name}`, tolerance);
  }
}

/** Checks one engine against one fixture: forward, loss, gradients (if the engine exposes them), AdamW steps. */
async function checkAgainstTorch(engine: Engine, fixture: Fixture, name: string): Promise<void> {
  const { expected, batch } = fixture;
  engine.setWeights(fixture.weights);
  const out = engine.forward(batch, { mlmLogits: true });
  assertClose(out.logits, expected.logits, `${name} logits`);
  if (expected.nspLogits) assertClose(out.nspLogits!, expected.nspLogits, `${name} NSP logits`);
  if (expected.paths) {
    assertEquals([...out.paths!], expected.paths, `${name} Viterbi paths`);
  }
  const evaluated = engine.evaluate(batch);
  assertClose([evaluated.loss], [expected.loss], `${name} loss`);

  // tfjs: gradients(); native: computeGradients() then getGradients()
  const native = engine as unknown as { computeGradients?(b: Batch): unknown; getGradients?(): Weights };
  const grads = "gradients" in engine
    ? (engine as TfjsEngine).gradients(batch)
    : native.computeGradients && native.getGradients
    ? (native.computeGradients(batch), native.getGradients())
    : undefined;
  assert(grads, `${name}: the engine exposes no gradients to compare`);
  const { weights: torchGrads } = await readSafetensors(join(fixture.dir, "grads.safetensors"));
  for (const [tensor, g] of torchGrads) {
    const mine = grads.get(tensor);
    assert(mine, `${name}: no gradient for ${tensor}`);
    const scale = Math.max(1e-3, ...g.data.map(Math.abs));
    assertClose(mine.data, g.data, `${name} gradient of ${tensor}`, TOLERANCE * scale * 10);
  }

  for (let s = 0; s < expected.steps; s++) {
    assertClose(
      [engine.learningRate()],
      [expected.learningRates[s]!],
      `${name} learning rate of step ${s}`,
      1e-12,
    );
    const stats = engine.trainStep(batch);
    assertClose([stats.loss], [expected.stepLosses[s]!], `${name} loss before step ${s}`);
  }
  const { weights: after } = await readSafetensors(join(fixture.dir, "after.safetensors"));
  assertWeightsClose(engine.getWeights(), after, `${name} weights after ${expected.steps} AdamW steps`);
}

for (const name of CASES) {
  Deno.test(`tfjs (cpu) matches PyTorch on '${name}': logits, loss, gradients, AdamW steps`, async () => {
    const fixture = await loadFixture(name);
    const engine = await createTfjsEngine({ ...fixture.options, backend: "cpu" });
    try {
      await checkAgainstTorch(engine, fixture, name);
    } finally {
      engine.dispose();
    }
  });
}

/** Two micro-batches accumulated into one AdamW step, against PyTorch. */
async function checkAccumulation(create: (options: EngineOptions) => Promise<Engine>): Promise<void> {
  const dir = join(FIXTURES, "accum");
  const expected = JSON.parse(await Deno.readTextFile(join(dir, "expected.json")));
  const micro = (JSON.parse(await Deno.readTextFile(join(dir, "inputs.json"))) as Record<string, unknown>[])
    .map(
      toBatch,
    );
  const model = await loadModelDir(dir);
  const engine = await create({ config: model.config, head: expected.head, optimizer: expected.optimizer });
  try {
    engine.setWeights(model.weights);
    engine.trainStep(micro[0]!);
    assertEquals(engine.getTrainState().step, 0, "no optimizer step after the first micro-batch");
    engine.trainStep(micro[1]!);
    assertEquals(engine.getTrainState().step, 1);
    const { weights: after } = await readSafetensors(join(dir, "after.safetensors"));
    assertWeightsClose(engine.getWeights(), after, "accumulated step");
  } finally {
    engine.dispose();
  }
}

Deno.test("tfjs (cpu) matches PyTorch on gradient accumulation over two micro-batches", () =>
  checkAccumulation((options) => createTfjsEngine({ ...options, backend: "cpu" })));

Deno.test("checkpoint.ts names and shapes match HF state_dicts for the bert-base-chinese config", async () => {
  const { expectedTensors } = await import("../../services/shared/model/checkpoint.ts");
  const { parseConfig } = await import("../../services/shared/model/config.ts");
  const hf = JSON.parse(await Deno.readTextFile(join(FIXTURES, "hf_names_bert_base_chinese.json")));
  const config = parseConfig(
    await Deno.readTextFile(new URL("../../../shared/data/bert-base-chinese/config.json", import.meta.url))
      .catch(
        () =>
          JSON.stringify({
            vocab_size: 21128,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
          }),
      ),
  );
  for (
    const { head, tensors } of Object.values(hf) as { head: HeadSpec; tensors: Record<string, number[]> }[]
  ) {
    const ours = Object.fromEntries(expectedTensors(config, head));
    assertEquals(ours, tensors, `tensors of head ${JSON.stringify(head)}`);
  }
});

// ------------------------------------------------------------------------------------ native engine

const nativeModule = new URL("../../services/shared/engine/native/mod.ts", import.meta.url);
const nativePresent = await Deno.stat(nativeModule).then(() => true, () => false);
if (!nativePresent) {
  console.warn("parity: services/shared/engine/native/mod.ts is not there yet: native parity tests skipped");
}

async function createNative(options: EngineOptions): Promise<Engine> {
  const mod = await import(nativeModule.href);
  return await mod.createNativeEngine(options);
}

Deno.test({
  name: "native matches PyTorch on gradient accumulation over two micro-batches",
  ignore: !nativePresent,
  fn: () => checkAccumulation(createNative),
});

for (const name of CASES) {
  Deno.test({
    name: `native matches PyTorch on '${name}'`,
    ignore: !nativePresent,
    fn: async () => {
      const fixture = await loadFixture(name);
      const engine = await createNative(fixture.options);
      try {
        await checkAgainstTorch(engine, fixture, name);
      } finally {
        engine.dispose();
      }
    },
  });
  Deno.test({
    name: `native matches tfjs on '${name}' with the same weights (forward and one step)`,
    ignore: !nativePresent,
    fn: async () => {
      const fixture = await loadFixture(name);
      const native = await createNative(fixture.options);
      const tfjs = await createTfjsEngine({ ...fixture.options, backend: "cpu" });
      try {
        native.setWeights(fixture.weights);
        tfjs.setWeights(fixture.weights);
        const a = native.forward(fixture.batch, { mlmLogits: true, wantHidden: true });
        const b = tfjs.forward(fixture.batch, { mlmLogits: true, wantHidden: true });
        assertClose(a.logits, b.logits, `${name} logits`);
        assertClose(a.hidden!, b.hidden!, `${name} hidden`);
        for (let s = 0; s < 3; s++) {
          assertClose(
            [native.trainStep(fixture.batch).loss],
            [tfjs.trainStep(fixture.batch).loss],
            `${name} step ${s} loss`,
          );
        }
        assertWeightsClose(native.getWeights(), tfjs.getWeights(), `${name} weights after 3 steps`);
      } finally {
        native.dispose();
        tfjs.dispose();
      }
    },
  });
}

/**
 * Time-budgeted pretraining, MLM-only objective and the masking rate, on real tiny shards in a real store. The
 * clock is injected (each reading advances by a fixed amount), which makes the time a step takes, and so the
 * whole budgeted schedule, deterministic.
 */
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { LocalStore } from "../shared/store/local.ts";
import { Cancelled, InvalidArgument } from "../shared/errors.ts";
import { readManifest } from "../shared/store/publish.ts";
import { budgetLearningRate, scheduledLearningRate } from "../shared/engine/schedule.ts";
import { createEngine, requestedBackend } from "../shared/engine/select.ts";
import type { Batch } from "../shared/engine/engine.ts";
import { parseDuration } from "../shared/report/duration.ts";
import { parseConfig } from "../shared/model/config.ts";
import { IGNORE_INDEX } from "../shared/shards/batch.ts";
import {
  type PretrainJobSpec,
  resolvePretrainSpec,
  runPretrainJob,
  tilePositionEmbeddings,
} from "./pretrain.ts";
import { setEngineFactory } from "./jobs.ts";
import type { TrainerEvent } from "./loop.ts";
import { tinyConfigJson, writeTinyShards } from "./testing.ts";
import { loadLatestCheckpoint } from "./checkpoint.ts";

async function withStore(fn: (store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "bf-budget-test-" });
  try {
    await fn(new LocalStore(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A clock whose every reading is `tick` seconds after the previous one: each step then takes exactly `tick`. */
function tickingClock(tick: number): () => number {
  let t = 1000;
  return () => (t += tick);
}

const BUDGETED: PretrainJobSpec = {
  name: "budgeted",
  shards: "tiny",
  configJson: tinyConfigJson(),
  steps: 0,
  budgetSeconds: 3,
  warmupFraction: 0.25,
  batchSize: 8,
  learningRate: 4e-3,
  checkpointEvery: 4,
  evalEvery: 4,
  logEvery: 1,
  seed: 5,
};

async function weightsHash(store: LocalStore, prefix: string): Promise<string> {
  const manifest = await readManifest(store, prefix);
  return manifest.parts.find((p) => p.name === "model.safetensors")!.sha256;
}

Deno.test("budgetLearningRate(): warmup over its share of the budget, then linear decay to 0 when it is spent", () => {
  assertEquals(budgetLearningRate(1e-3, 0, 0.1), 0);
  assertAlmostEquals(budgetLearningRate(1e-3, 0.05, 0.1), 5e-4, 1e-12);
  assertAlmostEquals(budgetLearningRate(1e-3, 0.1, 0.1), 1e-3, 1e-12);
  assertAlmostEquals(budgetLearningRate(1e-3, 0.55, 0.1), 5e-4, 1e-12);
  assertEquals(budgetLearningRate(1e-3, 1, 0.1), 0);
  assertEquals(budgetLearningRate(1e-3, 1.5, 0.1), 0, "past the budget stays at 0");
  assertAlmostEquals(budgetLearningRate(1e-3, 0, 0), 1e-3, 1e-12, "no warmup starts at the peak");
  // The step schedule is the same shape over steps (HF's linear schedule with warmup).
  assertAlmostEquals(scheduledLearningRate({ lr: 1e-3, warmupSteps: 10, totalSteps: 100 }, 55), 5e-4, 1e-12);
});

Deno.test("parseDuration() reads 30m, 2h, 1h30m, 90s and plain seconds, and names a bad value", () => {
  assertEquals(parseDuration("30m"), 1800);
  assertEquals(parseDuration("2h"), 7200);
  assertEquals(parseDuration("1h30m"), 5400);
  assertEquals(parseDuration("90s"), 90);
  assertEquals(parseDuration("1800"), 1800);
  assertEquals(parseDuration("0.5h"), 1800);
  for (const bad of ["", "0", "-5m", "30 minutes", "m", "2x"]) {
    assertThrows(() => parseDuration(bad), InvalidArgument, JSON.stringify(bad));
  }
});

Deno.test("a budgeted job ends when its training time is spent, its learning rate following the time", () =>
  withStore(async (store) => {
    await writeTinyShards(store, "tiny", { count: 320 });
    const events: TrainerEvent[] = [];
    const outcome = await runPretrainJob(BUDGETED, {
      jobId: "job-b",
      store,
      emit: (e) => void events.push(e),
      threads: 1,
      clock: tickingClock(0.25),
    });
    const steps = events.filter((e) => e.type === "step");
    // 3 s of 0.25 s steps.
    assertEquals(outcome.steps, 12);
    assertEquals(steps.map((e) => e.step), Array.from({ length: 12 }, (_, i) => i + 1));
    for (const e of steps) {
      assert(e.type === "step");
      // The rate of step n was set from the time spent before it: (n - 1) steps of 0.25 s.
      const expected = budgetLearningRate(4e-3, ((e.step - 1) * 0.25) / 3, 0.25);
      assertAlmostEquals(e.learningRate, expected, 1e-12, `step ${e.step}`);
      assertEquals(e.budgetSeconds, 3);
      assertAlmostEquals(e.trainSeconds!, e.step * 0.25, 1e-9);
      assertAlmostEquals(e.etaSeconds, 3 - e.step * 0.25, 1e-9, "time left counts down");
      assertEquals(e.totalSteps, 12, "the step count the budget holds at this pace");
    }
    const rates = steps.map((e) => e.type === "step" ? e.learningRate : NaN);
    assertAlmostEquals(Math.max(...rates), 4e-3, 1e-12, "the peak is reached after the warmup share");
    // The last of 12 steps starts at 11/12 of the budget: (1 - 11/12) / (1 - 0.25) of the peak.
    assertAlmostEquals(rates.at(-1)!, 4e-3 / 9, 1e-12, "the last step has decayed close to 0");
    assertAlmostEquals(outcome.metrics.train_seconds!, 3, 1e-9);
    const messages = events.filter((e) => e.type === "message").map((e) =>
      e.type === "message" ? e.message : ""
    );
    assert(messages.some((m) => m.includes("a budget of 3s of training time")), messages.join("\n"));
  }));

Deno.test("a budgeted job with a step cap stops at the cap, its schedule still spanning the budget", () =>
  withStore(async (store) => {
    await writeTinyShards(store, "tiny", { count: 320 });
    const outcome = await runPretrainJob({ ...BUDGETED, steps: 5 }, {
      jobId: "job-cap",
      store,
      emit: () => {},
      threads: 1,
      clock: tickingClock(0.25),
    });
    assertEquals(outcome.steps, 5);
    assertAlmostEquals(outcome.metrics.train_seconds!, 1.25, 1e-9);
  }));

Deno.test("a budgeted job cancelled mid-budget resumes to the weights of an uninterrupted run", () =>
  withStore(async (store) => {
    await writeTinyShards(store, "tiny", { count: 320 });
    const straight = await runPretrainJob({ ...BUDGETED, name: "straight" }, {
      jobId: "job-s",
      store,
      emit: () => {},
      threads: 1,
      clock: tickingClock(0.25),
    });
    const controller = new AbortController();
    await assertRejects(
      () =>
        runPretrainJob({ ...BUDGETED, name: "resumed" }, {
          jobId: "job-r",
          store,
          emit: (e) => {
            if (e.type === "step" && e.step === 7) controller.abort();
          },
          signal: controller.signal,
          threads: 1,
          clock: tickingClock(0.25),
        }),
      Cancelled,
    );
    const saved = await loadLatestCheckpoint(store, "job-r");
    assertEquals(saved?.step, 7);
    assertAlmostEquals((saved!.state.loop as { trainSeconds: number }).trainSeconds, 1.75, 1e-9);
    // The restarted process reads a clock far from the first one's: only the time spent in steps counts.
    let t = 987_654;
    const resumed = await runPretrainJob({ ...BUDGETED, name: "resumed" }, {
      jobId: "job-r",
      store,
      emit: () => {},
      threads: 1,
      clock: () => (t += 0.25),
    });
    assertEquals(resumed.steps, straight.steps);
    assertEquals(
      await weightsHash(store, resumed.model.prefix),
      await weightsHash(store, straight.model.prefix),
    );
  }));

/** Runs `fn` with every engine a job makes recording the micro-batches it trains on. */
async function recordingBatches(fn: (batches: Batch[]) => Promise<void>) {
  const batches: Batch[] = [];
  setEngineFactory(async (options) => {
    const engine = await createEngine({
      ...options,
      backend: requestedBackend(options.backend || undefined),
    });
    const trainStep = engine.trainStep.bind(engine);
    engine.trainStep = (batch) => {
      batches.push(batch);
      return trainStep(batch);
    };
    return engine;
  });
  try {
    await fn(batches);
  } finally {
    setEngineFactory(null);
  }
}

Deno.test("objective mlm trains and evaluates without next-sentence labels; mlm-nsp keeps them", () =>
  recordingBatches((batches) =>
    withStore(async (store) => {
      await writeTinyShards(store, "tiny", { count: 320 });
      const spec = { ...BUDGETED, budgetSeconds: 0, warmupFraction: undefined, steps: 4 };
      const events: TrainerEvent[] = [];
      const outcome = await runPretrainJob({ ...spec, objective: "mlm" }, {
        jobId: "job-mlm",
        store,
        emit: (e) => void events.push(e),
        threads: 1,
      });
      assertEquals(batches.length, 4);
      assert(batches.every((b) => b.nspLabels === undefined && b.mlmLabels !== undefined));
      for (const e of events) {
        if (e.type === "step") assertEquals(e.nspAccuracy, undefined);
        if (e.type === "eval") assertEquals(e.metrics.nsp_accuracy, undefined);
      }
      assertEquals(outcome.metrics.eval_nsp_accuracy, undefined);
      assert(Number.isFinite(outcome.metrics.eval_mlm_accuracy));

      batches.length = 0;
      await runPretrainJob({ ...spec, name: "both" }, {
        jobId: "job-nsp",
        store,
        emit: () => {},
        threads: 1,
      });
      assert(batches.length === 4 && batches.every((b) => b.nspLabels?.length === b.B));
    })
  ));

Deno.test("packed shards train MLM-only by default and refuse mlm-nsp", () =>
  recordingBatches((batches) =>
    withStore(async (store) => {
      await writeTinyShards(store, "packed", { count: 320, packed: true });
      const spec = {
        ...BUDGETED,
        shards: "packed",
        budgetSeconds: 0,
        warmupFraction: undefined,
        steps: 2,
      };
      const events: TrainerEvent[] = [];
      await runPretrainJob(spec, { jobId: "job-p", store, emit: (e) => void events.push(e), threads: 1 });
      assert(batches.length === 2 && batches.every((b) => b.nspLabels === undefined));
      assert(events.some((e) => e.type === "message" && e.message.includes("objective mlm")));
      await assertRejects(
        () =>
          runPretrainJob({ ...spec, name: "nsp", objective: "mlm-nsp" }, {
            jobId: "job-p2",
            store,
            emit: () => {},
            threads: 1,
          }),
        InvalidArgument,
        "packed",
      );
    })
  ));

Deno.test("--mask-rate re-draws masks at that rate as instances are read", () =>
  recordingBatches((batches) =>
    withStore(async (store) => {
      await writeTinyShards(store, "tiny", { count: 320, T: 32 });
      const spec = { ...BUDGETED, budgetSeconds: 0, warmupFraction: undefined, steps: 6, batchSize: 16 };
      const share = async (maskRate?: number) => {
        batches.length = 0;
        await runPretrainJob({ ...spec, name: `m${maskRate}`, ...(maskRate ? { maskRate } : {}) }, {
          jobId: `job-m${maskRate}`,
          store,
          emit: () => {},
          threads: 1,
        });
        let masked = 0, real = 0;
        for (const b of batches) {
          for (let i = 0; i < b.B * b.T; i++) {
            real += b.attentionMask[i]!;
            if (b.mlmLabels![i] !== IGNORE_INDEX) masked++;
          }
        }
        return masked / real;
      };
      const shards = await share();
      const high = await share(0.4);
      // The tiny shards hold 15% masks; special tokens are never masked, so the share of all tokens is a bit lower.
      assert(shards > 0.1 && shards < 0.17, `static ${shards}`);
      assert(high > 0.3 && high < 0.42, `0.4 -> ${high}`);
    })
  ));

Deno.test("resolvePretrainSpec() names the field of every bad budget, objective and masking setting", () => {
  const base: PretrainJobSpec = { name: "m", shards: "s", arch: "bert-mini", steps: 10 };
  const bad: [Partial<PretrainJobSpec>, string][] = [
    [{ steps: 0 }, "pretrain.steps"],
    [{ steps: 0, budgetSeconds: -1 }, "pretrain.budget_seconds"],
    [{ steps: 0, budgetSeconds: 31 * 24 * 3600 }, "pretrain.budget_seconds"],
    [{ steps: 0, budgetSeconds: NaN }, "pretrain.budget_seconds"],
    [{ budgetSeconds: 60, warmupSteps: 5 }, "pretrain.warmup_steps does not apply"],
    [{ warmupFraction: 0.1 }, "pretrain.warmup_fraction needs budget_seconds"],
    [{ budgetSeconds: 60, warmupFraction: 1 }, "pretrain.warmup_fraction"],
    [{ objective: "electra" as never }, "pretrain.objective"],
    [{ maskRate: 0.9 }, "pretrain.mask_rate"],
    [{ maskRate: 0.3, dynamicMasking: false }, "pretrain.mask_rate"],
  ];
  for (const [change, message] of bad) {
    assertThrows(() => resolvePretrainSpec({ ...base, ...change }), InvalidArgument, message);
  }
  const budgeted = resolvePretrainSpec({ ...base, steps: 0, budgetSeconds: 1800 });
  assertEquals(budgeted.steps, 0);
  assertEquals(budgeted.warmupFraction, 0.05);
  assertEquals(budgeted.checkpointEvery, 500);
  // Budgeted small presets: a higher peak rate and no dropout; a step-count job keeps the old defaults.
  assertEquals([budgeted.learningRate, budgeted.dropout], [5e-4, 0]);
  const stepped = resolvePretrainSpec(base);
  assertEquals([stepped.learningRate, stepped.dropout], [1e-4, undefined]);
  assertEquals(
    resolvePretrainSpec({ ...base, arch: "bert-base", steps: 0, budgetSeconds: 60 }).learningRate,
    1e-4,
  );
  assertEquals(resolvePretrainSpec({ ...base, maskRate: 0.3 }).dynamicMasking, true);
});

Deno.test("--dropout sets the encoder's dropout while pretraining; the published config keeps the architecture's", () =>
  withStore(async (store) => {
    await writeTinyShards(store, "tiny", { count: 320 });
    const seen: number[][] = [];
    setEngineFactory(async (options) => {
      seen.push([options.config.hidden_dropout_prob, options.config.attention_probs_dropout_prob]);
      return await createEngine({ ...options, backend: requestedBackend(options.backend || undefined) });
    });
    try {
      const spec = { ...BUDGETED, budgetSeconds: 0, warmupFraction: undefined, steps: 2 };
      const outcome = await runPretrainJob({ ...spec, dropout: 0 }, {
        jobId: "job-d",
        store,
        emit: () => {},
      });
      assertEquals(seen, [[0, 0]]);
      const config = await store.getJson<Record<string, number>>(`${outcome.model.prefix}/config.json`);
      assertEquals([config.hidden_dropout_prob, config.attention_probs_dropout_prob], [0.1, 0.1]);
      assertThrows(() => resolvePretrainSpec({ ...spec, dropout: 1 }), InvalidArgument, "pretrain.dropout");
    } finally {
      setEngineFactory(null);
    }
  }));

Deno.test("a short-row phase comes first for its share of the job, then the main shards; resume keeps the phase", () =>
  recordingBatches((batches) =>
    withStore(async (store) => {
      await writeTinyShards(store, "long", { count: 320, T: 24 });
      await writeTinyShards(store, "short", { count: 640, T: 12 });
      const spec: PretrainJobSpec = {
        ...BUDGETED,
        shards: "long",
        shortShards: "short",
        shortFraction: 0.5,
        batchSize: 4,
      };
      const events: TrainerEvent[] = [];
      const straight = await runPretrainJob({ ...spec, name: "straight" }, {
        jobId: "job-s",
        store,
        emit: (e) => void events.push(e),
        threads: 1,
        clock: tickingClock(0.25),
      });
      // 12 steps of 0.25 s in a 3 s budget: the first 6 start before half of it is spent.
      assertEquals(batches.map((b) => `${b.B}x${b.T}`), [...Array(6).fill("8x12"), ...Array(6).fill("4x24")]);
      const messages = events.flatMap((e) => e.type === "message" ? [e.message] : []);
      assert(
        messages.some((m) => m.includes("first 50% of the budget on short (B=8 T=12")),
        messages.join("\n"),
      );
      assert(messages.some((m) => m.startsWith("short phase done")));
      const lineage = await store.getJson<{ inputs: { role: string }[] }>(
        `${straight.model.prefix}/lineage.json`,
      );
      assert(lineage.inputs.some((i) => i.role === "short_shards"));

      const controller = new AbortController();
      await assertRejects(
        () =>
          runPretrainJob({ ...spec, name: "resumed" }, {
            jobId: "job-r",
            store,
            emit: (e) => {
              if (e.type === "step" && e.step === 4) controller.abort();
            },
            signal: controller.signal,
            threads: 1,
            clock: tickingClock(0.25),
          }),
        Cancelled,
      );
      const resumed = await runPretrainJob({ ...spec, name: "resumed" }, {
        jobId: "job-r",
        store,
        emit: () => {},
        threads: 1,
        clock: tickingClock(0.25),
      });
      assertEquals(
        await weightsHash(store, resumed.model.prefix),
        await weightsHash(store, straight.model.prefix),
      );

      await writeTinyShards(store, "same", { count: 64, T: 24 });
      await assertRejects(
        () =>
          runPretrainJob({ ...spec, shortShards: "same" }, {
            jobId: "job-x",
            store,
            emit: () => {},
            threads: 1,
          }),
        InvalidArgument,
        "not shorter",
      );
      assertThrows(
        () => resolvePretrainSpec({ ...spec, shortShards: undefined, shortFraction: 0.5 }),
        InvalidArgument,
        "pretrain.short_fraction needs short_shards",
      );
    })
  ));

Deno.test("at the switch to long rows, positions the short phase never trained start as copies of trained ones", async () => {
  const engine = await createEngine({
    config: parseConfig(tinyConfigJson()),
    head: { task: "pretrain" },
    backend: requestedBackend(undefined),
    log: () => {},
  });
  try {
    const before = engine.getWeights();
    const table = before.get("bert.embeddings.position_embeddings.weight")!;
    const [rows, width] = table.shape as [number, number];
    const row = (data: Float32Array, p: number) => Array.from(data.subarray(p * width, (p + 1) * width));
    assert(rows > 12, "the tiny config must have room beyond the short rows");
    // Random init: position 5 and 11 differ, so a copy is visible.
    assert(row(table.data, 5).join() !== row(table.data, 11).join());
    tilePositionEmbeddings(engine, 6, 12);
    const after = engine.getWeights();
    const tiled = after.get("bert.embeddings.position_embeddings.weight")!.data;
    for (let p = 0; p < 6; p++) assertEquals(row(tiled, p), row(table.data, p), `trained position ${p} kept`);
    for (let p = 6; p < 12; p++) {
      assertEquals(row(tiled, p), row(table.data, p - 6), `position ${p} copies ${p - 6}`);
    }
    for (let p = 12; p < rows; p++) {
      assertEquals(row(tiled, p), row(table.data, p), `position ${p} beyond the rows kept`);
    }
    // Nothing else moves.
    for (const [name, tensor] of before) {
      if (name !== "bert.embeddings.position_embeddings.weight") {
        assertEquals(after.get(name)!.data, tensor.data, name);
      }
    }
  } finally {
    engine.dispose();
  }
});

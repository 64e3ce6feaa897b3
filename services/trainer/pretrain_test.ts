import { assert, assertEquals, assertGreater, assertRejects, assertThrows } from "@std/assert";
import { LocalStore } from "../shared/store/local.ts";
import { Cancelled, FailedPrecondition, InvalidArgument, NotFound, Unavailable } from "../shared/errors.ts";
import { readManifest } from "../shared/store/publish.ts";
import { resolvePretrainSpec, runPretrainJob } from "./pretrain.ts";
import { setEngineFactory } from "./jobs.ts";
import { createEngine, requestedBackend } from "../shared/engine/select.ts";
import type { TrainerEvent } from "./loop.ts";
import { tinyConfigJson, writeTinyShards } from "./testing.ts";
import { listCheckpointSteps, loadLatestCheckpoint } from "./checkpoint.ts";

async function withStore(fn: (store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "bf-pretrain-test-" });
  try {
    await fn(new LocalStore(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const SPEC = {
  name: "tiny",
  shards: "tiny",
  configJson: tinyConfigJson(),
  steps: 12,
  batchSize: 8,
  learningRate: 3e-3,
  checkpointEvery: 4,
  evalEvery: 4,
  keepCheckpoints: 2,
  logEvery: 2,
  seed: 3,
};

async function weightsHash(store: LocalStore, prefix: string): Promise<string> {
  const manifest = await readManifest(store, prefix);
  return manifest.parts.find((p) => p.name === "model.safetensors")!.sha256;
}

Deno.test("runPretrainJob() trains, evaluates held-out data, checkpoints and publishes the HF layout", () =>
  withStore(async (store) => {
    await writeTinyShards(store, "tiny", { count: 320 });
    const events: TrainerEvent[] = [];
    const outcome = await runPretrainJob(SPEC, {
      jobId: "job-a",
      store,
      emit: (e) => void events.push(e),
      threads: 1,
    });
    const steps = events.filter((e) => e.type === "step");
    assertEquals(steps.map((e) => e.step), [2, 4, 6, 8, 10, 12]);
    const first = steps[0]!, last = steps.at(-1)!;
    assert(first.type === "step" && last.type === "step");
    assert(first.mlmAccuracy !== undefined && first.nspAccuracy !== undefined);
    assertGreater(first.loss, last.loss, "loss goes down");
    assertGreater(last.tokensPerSecond, 0);
    const evals = events.filter((e) => e.type === "eval");
    assertEquals(evals.length, 3);
    const metrics = evals[0]!.type === "eval" ? evals[0]!.metrics : {};
    for (const key of ["loss", "mlm_accuracy", "nsp_accuracy", "perplexity"]) {
      assert(Number.isFinite(metrics[key]), key);
    }
    assertEquals(events.filter((e) => e.type === "checkpoint").map((e) => e.step), [4, 8, 12]);
    assertEquals(await listCheckpointSteps(store, "job-a"), [8, 12]);

    const manifest = await readManifest(store, outcome.model.prefix);
    const names = manifest.parts.map((p) => p.name);
    for (
      const file of [
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "metrics.json",
        "lineage.json",
        "loss.svg",
        "accuracy.svg",
      ]
    ) assert(names.includes(file), `${file} in ${names}`);
    const config = await store.getJson<Record<string, unknown>>(`${outcome.model.prefix}/config.json`);
    assertEquals(config.architectures, ["BertForPreTraining"]);
    const lineage = await store.getJson<{ inputs: { role: string }[]; job_id: string; code_version: string }>(
      `${outcome.model.prefix}/lineage.json`,
    );
    assertEquals(lineage.inputs.map((i) => i.role), ["shards", "vocab", "corpus"]);
    assertEquals(lineage.job_id, "job-a");
    assert(/^\d{8}T\d{6}Z$/.test(outcome.model.version));
  }));

for (const gradAccum of [1, 2]) {
  Deno.test(`a cancelled pretraining job resumes to bit-identical weights (grad accumulation ${gradAccum})`, () =>
    withStore(async (store) => {
      const spec = { ...SPEC, gradAccum };
      await writeTinyShards(store, "tiny", { count: 320 });
      const straight = await runPretrainJob({ ...spec, name: "straight" }, {
        jobId: "job-s",
        store,
        emit: () => {},
        threads: 1,
      });

      const controller = new AbortController();
      const emit = (e: TrainerEvent) => {
        if (e.type === "step" && e.step === 6) controller.abort();
      };
      await assertRejects(
        () =>
          runPretrainJob({ ...spec, name: "resumed" }, {
            jobId: "job-r",
            store,
            emit,
            signal: controller.signal,
            threads: 1,
          }),
        Cancelled,
        "resumable",
      );
      // The cancel left a checkpoint at the step it stopped (6 is not a multiple of checkpointEvery).
      assertEquals((await loadLatestCheckpoint(store, "job-r"))?.step, 6);
      const events: TrainerEvent[] = [];
      const resumed = await runPretrainJob({ ...spec, name: "resumed" }, {
        jobId: "job-r",
        store,
        emit: (e) => void events.push(e),
        threads: 1,
      });
      assertEquals(events[0]?.type === "message" ? "message" : events[0]?.type, "message");
      assert(events.some((e) => e.type === "resumed" && e.step === 6));
      assertEquals(
        await weightsHash(store, resumed.model.prefix),
        await weightsHash(store, straight.model.prefix),
      );
      // The curves survive the restart too.
      const a = await store.getJson<{ curves: unknown }>(`${straight.model.prefix}/metrics.json`);
      const b = await store.getJson<{ curves: unknown }>(`${resumed.model.prefix}/metrics.json`);
      assertEquals(b.curves, a.curves);
    }));
}

Deno.test("runPretrainJob() refuses unknown shards, a config that does not fit the vocab, and NaN loss", () =>
  withStore(async (store) => {
    await writeTinyShards(store, "tiny", { count: 64 });
    const ctx = { jobId: "job-e", store, emit: () => {}, threads: 1 };
    await assertRejects(() => runPretrainJob({ ...SPEC, shards: "nope" }, ctx), NotFound);
    await assertRejects(
      () => runPretrainJob({ ...SPEC, configJson: tinyConfigJson({ vocab_size: 120 }) }, ctx),
      InvalidArgument,
      "vocab_size 120",
    );
    await assertRejects(
      () => runPretrainJob({ ...SPEC, configJson: undefined, arch: "bert-huge" }, ctx),
      InvalidArgument,
      "bert-huge",
    );
    // Stop a sane run at step 4 (checkpoint written), then continue the job with a learning rate that blows up.
    const controller = new AbortController();
    await assertRejects(
      () =>
        runPretrainJob({ ...SPEC, steps: 8 }, {
          ...ctx,
          jobId: "job-nan",
          signal: controller.signal,
          emit: (e) => void (e.type === "step" && e.step === 4 && controller.abort()),
        }),
      Cancelled,
    );
    // SubmitJob and the spec refuse a rate past 1 (limits.ts), so the rate that blows up goes to the engine.
    assertThrows(() => resolvePretrainSpec({ ...SPEC, learningRate: 1e30 }), InvalidArgument, "(0, 1]");
    setEngineFactory((options) =>
      createEngine({
        ...options,
        backend: requestedBackend(options.backend || undefined),
        optimizer: { ...options.optimizer, lr: 1e30 },
      })
    );
    const events: TrainerEvent[] = [];
    try {
      await assertRejects(
        () =>
          runPretrainJob({ ...SPEC, steps: 8 }, {
            ...ctx,
            jobId: "job-nan",
            emit: (e) => void events.push(e),
          }),
        FailedPrecondition,
        "diverged",
      );
    } finally {
      setEngineFactory(null);
    }
    const diverged = events.find((e) => e.type === "diverged");
    assert(diverged && diverged.type === "diverged");
    assertEquals(diverged.lastCheckpointStep, 4);
    assertEquals((await loadLatestCheckpoint(store, "job-nan"))?.step, 4);
  }));

/** A real local store that fails the next `failures` writes of checkpoint objects, as a store restarting would. */
class HiccupStore extends LocalStore {
  failures = 0;
  failed = 0;
  override put(...args: Parameters<LocalStore["put"]>) {
    if (this.failures > 0 && args[0].includes("/checkpoints/")) {
      this.failures--;
      this.failed++;
      return Promise.reject(new Unavailable("store is restarting"));
    }
    return super.put(...args);
  }
}

Deno.test("a store unavailable for a moment is retried and the job continues to the same weights", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bf-pretrain-hiccup-" });
  try {
    const store = new HiccupStore(dir);
    await writeTinyShards(store, "tiny", { count: 320 });
    const clean = await runPretrainJob({ ...SPEC, name: "clean" }, {
      jobId: "job-c",
      store,
      emit: () => {},
      threads: 1,
    });
    store.failures = 3;
    const flaky = await runPretrainJob({ ...SPEC, name: "flaky" }, {
      jobId: "job-f",
      store,
      emit: () => {},
      threads: 1,
    });
    assertEquals(store.failed, 3);
    assertEquals(await weightsHash(store, flaky.model.prefix), await weightsHash(store, clean.model.prefix));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runPretrainJob() evaluates the shard set's own eval split when it has one", () =>
  withStore(async (store) => {
    await writeTinyShards(store, "tiny", { count: 160, evalCount: 40 });
    const events: TrainerEvent[] = [];
    await runPretrainJob({ ...SPEC, steps: 4 }, {
      jobId: "job-split",
      store,
      emit: (e) => void events.push(e),
      threads: 1,
    });
    const intro = events.find((e) => e.type === "message" && e.message.startsWith("pretraining"));
    assert(
      intro && intro.type === "message" && intro.message.includes("(40 held out)"),
      JSON.stringify(intro),
    );
    assert(events.some((e) => e.type === "eval"));
  }));

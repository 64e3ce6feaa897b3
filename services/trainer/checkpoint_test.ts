import { assert, assertEquals, assertRejects } from "@std/assert";
import { LocalStore } from "../shared/store/local.ts";
import type { TrainState, Weights } from "../shared/engine/engine.ts";
import { Unavailable } from "../shared/errors.ts";
import {
  checkpointPrefix,
  listCheckpointSteps,
  loadBest,
  loadLatestCheckpoint,
  pruneCheckpoints,
  saveBest,
  saveCheckpoint,
  withRetry,
} from "./checkpoint.ts";

function tensors(seed: number): { weights: Weights; trainState: TrainState } {
  const weights: Weights = new Map([
    ["bert.embeddings.word_embeddings.weight", {
      shape: [3, 2],
      data: Float32Array.from([1, 2, 3, 4, 5, seed]),
    }],
    ["classifier.bias", { shape: [2], data: Float32Array.from([seed, -seed]) }],
  ]);
  const moments = new Map(
    [...weights].map(([n, t]) => [n, { m: t.data.map((x) => x / 10), v: t.data.map((x) => x * x) }]),
  );
  return { weights, trainState: { step: seed, microStep: 0, moments, rng: { s: [seed, 2, 3, 4] } } };
}

async function withStore(fn: (store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "bf-ckpt-test-" });
  try {
    await fn(new LocalStore(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function state(step: number) {
  return {
    step,
    microStep: 0,
    rng: { s: [step, 2, 3, 4] },
    cursor: { epoch: 1, position: step * 4 },
    loop: { k: step },
  };
}

Deno.test("saveCheckpoint() round-trips weights, moments, RNG, cursor and loop state", () =>
  withStore(async (store) => {
    const { weights, trainState } = tensors(7);
    await saveCheckpoint(store, "train-a", { step: 7, weights, trainState, state: state(7) });
    const loaded = await loadLatestCheckpoint(store, "train-a");
    assert(loaded);
    assertEquals(loaded.step, 7);
    assertEquals([...loaded.weights.keys()], [...weights.keys()]);
    assertEquals(loaded.weights.get("classifier.bias")!.data, Float32Array.from([7, -7]));
    assertEquals(loaded.trainState.moments.get("classifier.bias")!.v, Float32Array.from([49, 49]));
    assertEquals(loaded.trainState.rng, { s: [7, 2, 3, 4] });
    assertEquals(loaded.state.cursor, { epoch: 1, position: 28 });
    assertEquals(loaded.state.loop, { k: 7 });
  }));

Deno.test("loadLatestCheckpoint() skips a checkpoint without manifest or with a corrupt part", () =>
  withStore(async (store) => {
    for (const step of [10, 20, 30]) {
      const { weights, trainState } = tensors(step);
      await saveCheckpoint(store, "train-b", { step, weights, trainState, state: state(step) });
    }
    // 30: killed before the manifest was written; 20: a part damaged after the fact.
    await store.delete(`${checkpointPrefix("train-b", 30)}manifest.json`);
    await store.put(`${checkpointPrefix("train-b", 20)}state.json`, "{}");
    const loaded = await loadLatestCheckpoint(store, "train-b");
    assertEquals(loaded?.step, 10);
    assertEquals(await loadLatestCheckpoint(store, "train-none"), null);
  }));

Deno.test("pruneCheckpoints() keeps the newest K complete checkpoints and newer partial ones", () =>
  withStore(async (store) => {
    for (const step of [1, 2, 3, 4]) {
      const { weights, trainState } = tensors(step);
      await saveCheckpoint(store, "train-c", { step, weights, trainState, state: state(step) });
    }
    await store.put(`${checkpointPrefix("train-c", 5)}model.safetensors`, "partial");
    await pruneCheckpoints(store, "train-c", 2);
    assertEquals(await listCheckpointSteps(store, "train-c"), [3, 4, 5]);
    // Saving over the partial step 5 replaces its leftovers.
    const { weights, trainState } = tensors(5);
    await saveCheckpoint(store, "train-c", { step: 5, weights, trainState, state: state(5) });
    assertEquals((await loadLatestCheckpoint(store, "train-c"))?.step, 5);
  }));

Deno.test("saveBest()/loadBest() keep one best set of weights", () =>
  withStore(async (store) => {
    assertEquals(await loadBest(store, "train-d"), null);
    await saveBest(store, "train-d", 3, tensors(3).weights, { accuracy: 0.5 });
    await saveBest(store, "train-d", 9, tensors(9).weights, { accuracy: 0.75 });
    const best = await loadBest(store, "train-d");
    assertEquals(best?.step, 9);
    assertEquals(best?.metrics, { accuracy: 0.75 });
    assertEquals(best!.weights.get("classifier.bias")!.data, Float32Array.from([9, -9]));
  }));

Deno.test("withRetry() retries transient errors, not domain errors", async () => {
  let calls = 0;
  const value = await withRetry("flaky", () => {
    calls++;
    if (calls < 3) return Promise.reject(new Unavailable("store down"));
    return Promise.resolve(42);
  }, { baseDelayMs: 1 });
  assertEquals([value, calls], [42, 3]);
  calls = 0;
  await assertRejects(
    () =>
      withRetry("bad", () => {
        calls++;
        return Promise.reject(new RangeError("nope"));
      }, { attempts: 2, baseDelayMs: 1 }),
    Error,
    "bad failed after 2 attempts",
  );
  assertEquals(calls, 2);
});

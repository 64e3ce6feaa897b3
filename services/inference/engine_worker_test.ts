/**
 * The worker backend against the same engine in process: the same bits for every head, an event loop that
 * keeps running while a large pass runs, dispose and a dead worker failing forwards, and the registry
 * reloading a model whose worker died.
 */
import { assert, assertEquals, assertInstanceOf, assertRejects, assertStringIncludes } from "@std/assert";
import type { Batch, HeadSpec } from "../shared/engine/engine.ts";
import { Unavailable } from "../shared/errors.ts";
import { initWeights } from "../shared/model/checkpoint.ts";
import type { BertConfig } from "../shared/model/config.ts";
import { LocalStore } from "../shared/store/mod.ts";
import {
  type BackendOptions,
  createServingBackend,
  createWorkerBackend,
  type ServingBackend,
  type WorkerServingBackend,
} from "./backends.ts";
import { Registry } from "./registry.ts";
import { publishTinyModel, tinyConfig } from "./testing.ts";

/** A batch of B inputs of lengths T, T-1, ... (so padding and masks matter), ids from a fixed pattern. */
function batchOf(B: number, T: number, vocab: number): Batch {
  const inputIds = new Int32Array(B * T), tokenTypeIds = new Int32Array(B * T);
  const attentionMask = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const n = Math.max(1, T - b);
    for (let t = 0; t < n; t++) {
      inputIds[b * T + t] = 5 + ((b * 31 + t * 7) % (vocab - 5));
      tokenTypeIds[b * T + t] = t >= n / 2 ? 1 : 0;
      attentionMask[b * T + t] = 1;
    }
  }
  return { B, T, inputIds, tokenTypeIds, attentionMask };
}

/** Worker and in-process backends on the same weights (each gets its own copy: the worker's is detached). */
async function pair(
  config: BertConfig,
  head: HeadSpec,
  sizes: { maxSeqLen: number; maxBatchTokens: number },
): Promise<{ worker: ServingBackend; inProcess: ServingBackend }> {
  const options = (inProcess: boolean): BackendOptions => ({
    config,
    head,
    weights: initWeights(config, head, 11),
    backend: "native",
    ...sizes,
    inProcess,
    label: `test-${head.task}`,
    log: () => {},
  });
  const inProcess = await createServingBackend(options(true));
  const worker = await createServingBackend(options(false));
  return { worker, inProcess };
}

for (
  const head of [
    { task: "classify", numLabels: 3 },
    { task: "ner", numLabels: 5, crf: true },
    { task: "pretrain" },
  ] satisfies HeadSpec[]
) {
  Deno.test(`worker backend forward equals in-process forward bit for bit (${head.task}${head.crf ? "+crf" : ""})`, async () => {
    const config = tinyConfig();
    const { worker, inProcess } = await pair(config, head, { maxSeqLen: 16, maxBatchTokens: 64 });
    try {
      for (const [B, T] of [[1, 1], [3, 7], [4, 16]] as const) {
        const batch = batchOf(B, T, config.vocab_size);
        const options = head.task === "pretrain"
          ? { mlmLogits: true, wantHidden: true }
          : { wantHidden: true };
        const expected = await inProcess.forward(batch, options);
        const got = await worker.forward(batch, options);
        assertEquals(got, expected, `B=${B} T=${T}`);
        if (head.crf) assert(got.paths && got.paths.length === B * T);
        // The caller's batch is left intact (the worker got a copy).
        assertEquals(batch.inputIds.length, B * T);
      }
      assertEquals(worker.name, "native");
      assertEquals(worker.maxTokens, inProcess.maxTokens);
    } finally {
      worker.dispose();
      inProcess.dispose();
    }
  });
}

Deno.test("worker backend reports engine errors as the engine's own error class", async () => {
  const config = tinyConfig();
  const { worker, inProcess } = await pair(config, { task: "classify", numLabels: 2 }, {
    maxSeqLen: 8,
    maxBatchTokens: 16,
  });
  try {
    const tooLong = batchOf(1, 12, config.vocab_size);
    const expected = await Promise.resolve().then(() => inProcess.forward(tooLong, {})).catch((e) => e);
    const got = await Promise.resolve(worker.forward(tooLong, {})).then(() => undefined, (e) => e);
    assertEquals(got?.constructor, expected?.constructor);
    assertEquals(got?.message, expected?.message);
    // Still serving afterwards.
    assertEquals(
      await worker.forward(batchOf(2, 4, config.vocab_size), {}),
      await inProcess.forward(batchOf(2, 4, config.vocab_size), {}),
    );
  } finally {
    worker.dispose();
    inProcess.dispose();
  }
});

/** How late a 5 ms timer fires while one forward of `batch` runs on `backend`, and how long the forward took. */
async function timerLateness(
  backend: ServingBackend,
  batch: Batch,
): Promise<{ lateMs: number; forwardMs: number }> {
  const started = performance.now();
  let firedAt = 0;
  const timer = new Promise<void>((resolve) => setTimeout(() => (firedAt = performance.now(), resolve()), 5));
  const forward = Promise.resolve().then(() => backend.forward(batch, {}));
  await forward;
  const forwardMs = performance.now() - started;
  await timer;
  return { lateMs: firedAt - started, forwardMs };
}

Deno.test("worker backend keeps the event loop responsive during a large forward; in process it does not", async () => {
  // Large enough that one pass takes well over the 50 ms allowed below, even on a fast machine.
  const config = tinyConfig({
    hidden_size: 256,
    num_attention_heads: 4,
    intermediate_size: 1024,
    num_hidden_layers: 8,
    max_position_embeddings: 256,
  });
  const head: HeadSpec = { task: "classify", numLabels: 2 };
  const { worker, inProcess } = await pair(config, head, { maxSeqLen: 256, maxBatchTokens: 4096 });
  try {
    const batch = batchOf(16, 256, config.vocab_size);
    await worker.forward(batch, {}); // warm both: first passes touch fresh arena pages
    await inProcess.forward(batch, {});
    const blocked = await timerLateness(inProcess, batch);
    assert(
      blocked.forwardMs > 60 && blocked.lateMs >= blocked.forwardMs - 1,
      `in process the timer should wait for the pass: ${JSON.stringify(blocked)}`,
    );
    const free = await timerLateness(worker, batch);
    assert(free.forwardMs > 60, `the worker pass should be as large: ${JSON.stringify(free)}`);
    assert(
      free.lateMs < 50,
      `the timer fired ${free.lateMs.toFixed(1)} ms after it was set: ${JSON.stringify(free)}`,
    );
  } finally {
    worker.dispose();
    inProcess.dispose();
  }
});

/** A tiny classifier's backend options, named `label` in errors. */
function classifierOptions(label: string) {
  const config = tinyConfig();
  const head: HeadSpec = { task: "classify", numLabels: 2 };
  return {
    config,
    head,
    weights: initWeights(config, head, 1),
    backend: "native",
    maxSeqLen: 8,
    maxBatchTokens: 16,
    label,
  };
}

Deno.test("dispose() terminates the worker: a later forward rejects naming the model", async () => {
  const options = classifierOptions("cls/v1");
  const { config } = options;
  const backend = await createServingBackend(options);
  await backend.forward(batchOf(1, 4, config.vocab_size), {});
  backend.dispose();
  backend.dispose(); // twice is harmless
  const error = await assertRejects(() =>
    Promise.resolve(backend.forward(batchOf(1, 4, config.vocab_size), {}))
  );
  assertInstanceOf(error, Unavailable);
  assertStringIncludes(error.message, "cls/v1");
  assertStringIncludes(error.message, "unloaded");
});

Deno.test("a worker that dies fails pending and later forwards with UNAVAILABLE naming the model", async () => {
  const options = classifierOptions("cls/v2");
  const { config } = options;
  const backend: WorkerServingBackend = await createWorkerBackend(options, 2);
  try {
    backend.crash("boom");
    const pending = backend.forward(batchOf(1, 4, config.vocab_size), {});
    const first = await assertRejects(() => pending);
    assertInstanceOf(first, Unavailable);
    assertStringIncludes(first.message, "cls/v2");
    assertStringIncludes(first.message, "boom");
    assert(backend.failure?.());
    await assertRejects(
      () => Promise.resolve(backend.forward(batchOf(1, 4, config.vocab_size), {})),
      Unavailable,
    );
  } finally {
    backend.dispose();
  }
});

Deno.test("the registry reloads a model whose engine worker died at once, before any request asks", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bertforge-engine-worker-" });
  const store = new LocalStore(dir);
  const registry = new Registry({
    store,
    backend: "native",
    maxBatchTokens: 64,
    reloadIntervalMs: 0,
    autoLoad: false,
  });
  try {
    await publishTinyModel(store, "cls", { task: "classify" });
    const { instance } = await registry.load({ name: "cls" });
    const batch = batchOf(2, 5, instance.config.vocab_size);
    const before = await instance.backend.forward(batch, {});
    (instance.backend as WorkerServingBackend).crash("simulated fault");
    await assertRejects(() => Promise.resolve(instance.backend.forward(batch, {})), Unavailable);
    // No request comes: the registry replaces the dead worker's instance on its own.
    const deadline = Date.now() + 20_000;
    while (registry.resident({ name: "cls" }) === instance && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const healed = registry.resident({ name: "cls" });
    assert(healed && healed !== instance, "a fresh instance without a request");
    assertEquals(registry.state("cls").state, "MODEL_STATE_READY");
    assertEquals(await healed.backend.forward(batch, {}), before);
    const again = await registry.acquire({ name: "cls" });
    try {
      assert(again === healed, "requests get the replacement");
    } finally {
      registry.release(again);
    }
  } finally {
    await registry.close();
    await store.close().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

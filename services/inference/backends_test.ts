import { assert, assertEquals } from "@std/assert";
import type { HeadSpec } from "../shared/engine/engine.ts";
import { NativeEngine } from "../shared/engine/native/mod.ts";
import { initWeights } from "../shared/model/checkpoint.ts";
import { createServingBackend } from "./backends.ts";
import { tinyConfig } from "./testing.ts";

Deno.test("createServingBackend() serves on an engine without gradients or optimizer state", async () => {
  const config = tinyConfig();
  const head: HeadSpec = { task: "classify", numLabels: 3 };
  const weights = initWeights(config, head, 3);
  const backend = await createServingBackend({
    config,
    head,
    weights,
    backend: "native",
    maxSeqLen: 16,
    maxBatchTokens: 64,
    log: () => {},
  });
  // The same arena sizes on a training engine: what serving would hold if it allocated for training.
  const training = new NativeEngine({ config, head, maxBatch: 4, maxSeqLen: 16 });
  // The same weights again: the serving backend's worker took over the first copy's buffers.
  training.setWeights(initWeights(config, head, 3));
  try {
    let weightBytes = 0;
    for (const t of initWeights(config, head, 3).values()) weightBytes += t.data.byteLength;
    assert(
      training.memoryBytes() - backend.memoryBytes() > weightBytes,
      `serving ${backend.memoryBytes()} bytes vs training ${training.memoryBytes()}: no weight-sized gradients`,
    );
    const T = 5;
    const batch = {
      B: 2,
      T,
      inputIds: Int32Array.from({ length: 2 * T }, (_, i) => 5 + i),
      tokenTypeIds: new Int32Array(2 * T),
      attentionMask: new Int32Array(2 * T).fill(1),
    };
    assertEquals(await backend.forward(batch, {}), training.forward(batch));
  } finally {
    backend.dispose();
    training.dispose();
  }
});

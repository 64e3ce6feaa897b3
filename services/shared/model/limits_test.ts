import { assert, assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument, ResourceExhausted } from "../errors.ts";
import { NativeEngine } from "../engine/native/native_engine.ts";
import { type BertConfig, presetConfig } from "./config.ts";
import {
  checkCount,
  checkFitsMemory,
  checkReal,
  COUNT_LIMITS,
  engineMemoryBytes,
  RATE_LIMITS,
} from "./limits.ts";

Deno.test("checkCount() and checkReal() name the field, the range and the value", () => {
  assertEquals(checkCount("pretrain.steps", 10, COUNT_LIMITS.steps), 10);
  assertThrows(
    () => checkCount("pretrain.steps", 3_567_587_328, COUNT_LIMITS.steps),
    InvalidArgument,
    "pretrain.steps must be an integer in [1, 10000000]: current value is 3567587328",
  );
  assertThrows(() => checkCount("x", 1.5, COUNT_LIMITS.steps), InvalidArgument, "current value is 1.5");
  assertEquals(checkReal("lr", 1, RATE_LIMITS.learningRate), 1);
  for (const bad of [NaN, Infinity, 1e308, 0, -1e-5]) {
    assertThrows(
      () => checkReal("pretrain.learning_rate", bad, RATE_LIMITS.learningRate),
      InvalidArgument,
      `pretrain.learning_rate must be in (0, 1]: current value is ${bad}`,
    );
  }
  assertThrows(() => checkReal("w", 1, RATE_LIMITS.warmupFraction), InvalidArgument, "[0, 1)");
});

/** Small, odd sizes, so a swapped dimension in the estimate shows. */
const CONFIG: BertConfig = {
  ...presetConfig("bert-mini", 997),
  hidden_size: 48,
  num_attention_heads: 3,
  intermediate_size: 112,
  num_hidden_layers: 3,
  max_position_embeddings: 64,
};

Deno.test("engineMemoryBytes() is within 25% of what the native engine allocates, trained and serving", () => {
  for (
    const [task, head] of [["pretrain", { task: "pretrain" }], ["finetune", {
      task: "classify",
      numLabels: 5,
    }]] as const
  ) {
    for (const training of [true, false]) {
      const B = 5, T = 37;
      const engine = new NativeEngine({
        config: CONFIG,
        head,
        seed: 1,
        maxBatch: B,
        maxSeqLen: T,
        ...(training ? {} : { mode: "serve" as const }),
      });
      // The AdamW moments come with the first step: count them as the job will hold them.
      const params = engine.parameterNames().reduce((n, name) => n + engine.parameterView(name).length, 0);
      const actual = engine.memoryBytes() + (training ? 8 * params : 0);
      engine.dispose();
      const estimate = engineMemoryBytes(CONFIG, { batch: B, seqLen: T, task, labels: 5, training });
      const ratio = estimate / actual;
      assert(
        ratio > 0.75 && ratio < 1.25,
        `${task} training=${training}: ${estimate} vs ${actual} (x${ratio})`,
      );
    }
  }
});

Deno.test("checkFitsMemory() refuses a model past the node's memory with RESOURCE_EXHAUSTED naming both", () => {
  const base = presetConfig("bert-base", 21128);
  const shape = { batch: 32, seqLen: 128, task: "pretrain", training: true } as const;
  const bytes = checkFitsMemory("pretrain", base, shape, 64 * 2 ** 30);
  assert(bytes > 2 ** 30 && bytes < 16 * 2 ** 30, `bert-base at 32 x 128: ${bytes}`);
  assertThrows(
    () => checkFitsMemory("pretrain", base, { ...shape, batch: 4096, seqLen: 512 }, 64 * 2 ** 30),
    ResourceExhausted,
    "and this node has 64.0 GiB",
  );
});

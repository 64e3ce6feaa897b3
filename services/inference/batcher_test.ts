import { assert, assertEquals, assertRejects } from "@std/assert";
import { BertforgeError, Cancelled, ResourceExhausted } from "../shared/errors.ts";
import { initWeights } from "../shared/model/checkpoint.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import { createServingBackend } from "./backends.ts";
import { Batcher, type BatchTarget, type InferenceInput, type InferenceOutput } from "./batcher.ts";
import { InferenceMetrics } from "./metrics.ts";
import { TINY_VOCAB, tinyConfig } from "./testing.ts";

const tokenizer = WordPieceTokenizer.fromVocabText(TINY_VOCAB.join("\n"));

async function target(task: "classify" | "ner" | "pretrain", maxBatchTokens = 512): Promise<BatchTarget> {
  const config = tinyConfig();
  const head = task === "pretrain" ? { task } : { task, numLabels: task === "ner" ? 5 : 3 };
  const backend = await createServingBackend({
    config,
    head,
    weights: initWeights(config, head, 3),
    backend: "native",
    maxSeqLen: 64,
    maxBatchTokens,
  });
  return {
    id: Math.random(),
    label: task,
    backend,
    padId: 0,
    vocabSize: config.vocab_size,
    tokenLevel: task === "ner",
  };
}

function input(text: string, extra: Partial<InferenceInput> = {}): InferenceInput {
  const e = tokenizer.encode(text);
  return { ids: e.ids, typeIds: e.typeIds, ...extra };
}

function assertClose(actual: Float32Array, expected: Float32Array, tolerance = 1e-4): void {
  assertEquals(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    assert(
      Math.abs(actual[i]! - expected[i]!) <= tolerance,
      `value ${i}: ${actual[i]} vs ${expected[i]} (tolerance ${tolerance})`,
    );
  }
}

const TEXTS = ["今天天气很好", "hello world", "这家酒店的服务很差，房间也不好", "good", "un##believ"];

Deno.test("Batcher gives the same outputs for a text batched with others as alone (classify, ner, mlm, hidden)", async () => {
  for (const task of ["classify", "ner", "pretrain"] as const) {
    const t = await target(task);
    const batcher = new Batcher({ maxBatchTokens: 512, maxBatchRequests: 16, maxConcurrentRequests: 64 });
    const extra = (text: string): Partial<InferenceInput> =>
      task === "pretrain"
        ? { mlmPositions: [1, tokenizer.encode(text).ids.length - 2] }
        : { wantHidden: true };
    const alone: InferenceOutput[] = [];
    for (const text of TEXTS) alone.push((await batcher.submit(t, [input(text, extra(text))]))[0]!);
    const before = batcher.batches;
    const together = await Promise.all(TEXTS.map((text) => batcher.submit(t, [input(text, extra(text))])));
    assert(
      batcher.batches - before < TEXTS.length,
      `${task}: ${batcher.batches - before} passes for ${TEXTS.length} inputs`,
    );
    together.forEach(([out], i) => {
      assertEquals(out!.batchSize > 1, true);
      assertClose(out!.logits, alone[i]!.logits);
      if (task === "pretrain") assertClose(out!.mlm!, alone[i]!.mlm!, 1e-3);
      else assertClose(out!.hidden!, alone[i]!.hidden!);
    });
    await batcher.close();
    t.backend.dispose();
  }
});

Deno.test("Batcher keeps each pass within the token budget and groups inputs of close lengths", async () => {
  const t = await target("classify", 64);
  const metrics = new InferenceMetrics();
  const batcher = new Batcher({
    maxBatchTokens: 40,
    maxBatchRequests: 8,
    maxConcurrentRequests: 64,
    metrics,
  });
  const short = "好", long = "这家酒店的服务很差房间也不好今天天气很好";
  const texts = [long, short, long, short, short, long, short, short];
  const outputs = await Promise.all(texts.map((text) => batcher.submit(t, [input(text)])));
  for (const [out] of outputs) assert(out!.batchSize >= 1);
  const text = metrics.batchTokens.lines().join("\n");
  // Every pass's padded B*T is within 40 tokens: the bucket counts above 64 equal those at 64.
  const at = (le: string) => {
    const line = text.split("\n").find((l) => l.includes(`le="${le}"`));
    return Number(line?.split(" ").at(-1));
  };
  assertEquals(at("64"), at("+Inf"));
  assert(
    at("+Inf") < texts.length,
    `${at("+Inf")} passes for ${texts.length} inputs: short ones share passes`,
  );
  await batcher.close();
  t.backend.dispose();
});

Deno.test("Batcher refuses inputs beyond maxConcurrentRequests at once with ResourceExhausted", async () => {
  const t = await target("classify");
  const metrics = new InferenceMetrics();
  const batcher = new Batcher({
    maxBatchTokens: 512,
    maxBatchRequests: 4,
    maxConcurrentRequests: 3,
    metrics,
  });
  const first = batcher.submit(t, [input("好"), input("差")]);
  const error = await assertRejects(() => batcher.submit(t, [input("a"), input("b")]), ResourceExhausted);
  assert(error.message.includes("2 of 3"), error.message);
  assertEquals(metrics.overloaded.get({ model: "classify" }), 1);
  assertEquals((await first).length, 2);
  assertEquals(batcher.admitted, 0);
  assertEquals((await batcher.submit(t, [input("a"), input("b"), input("c")])).length, 3);
  await batcher.close();
  t.backend.dispose();
});

Deno.test("Batcher drops a cancelled request's queued inputs and fails expired deadlines", async () => {
  const t = await target("classify");
  const batcher = new Batcher({ maxBatchTokens: 512, maxBatchRequests: 1, maxConcurrentRequests: 16 });
  const controller = new AbortController();
  const kept = batcher.submit(t, [input("好")]);
  const cancelled = batcher.submit(t, [input("差"), input("很差")], { signal: controller.signal });
  assertEquals(batcher.queueSize, 3);
  controller.abort();
  assertEquals(batcher.queueSize, 1);
  await assertRejects(() => cancelled, Cancelled);
  assertEquals((await kept).length, 1);
  const expired = batcher.submit(t, [input("好")], { deadline: Date.now() - 1 });
  const error = await assertRejects(() => expired, BertforgeError);
  assertEquals(error.code, "DEADLINE_EXCEEDED");
  assertEquals(batcher.admitted, 0);
  await assertRejects(() => batcher.submit(t, [input("x")], { signal: AbortSignal.abort() }), Cancelled);
  await batcher.close();
  await assertRejects(() => batcher.submit(t, [input("x")]), Cancelled);
  t.backend.dispose();
});

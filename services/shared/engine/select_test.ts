import { assert, assertEquals, assertRejects, assertStringIncludes, assertThrows } from "@std/assert";
import { InvalidArgument, Unavailable } from "../errors.ts";
import { parseConfig } from "../model/config.ts";
import { AUTO_ORDER, createEngine, requestedBackend } from "./select.ts";

const config = parseConfig({
  vocab_size: 99,
  hidden_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  intermediate_size: 37,
  max_position_embeddings: 16,
});
const head = { task: "classify" as const, numLabels: 2 };

function withEnv<T>(value: string | undefined, fn: () => T): T {
  const saved = Deno.env.get("BERTFORGE_BACKEND");
  if (value === undefined) Deno.env.delete("BERTFORGE_BACKEND");
  else Deno.env.set("BERTFORGE_BACKEND", value);
  try {
    return fn();
  } finally {
    if (saved === undefined) Deno.env.delete("BERTFORGE_BACKEND");
    else Deno.env.set("BERTFORGE_BACKEND", saved);
  }
}

Deno.test("requestedBackend() takes the option, else BERTFORGE_BACKEND, else auto, and names bad values", () => {
  withEnv(undefined, () => assertEquals(requestedBackend(), "auto"));
  withEnv("wasm", () => assertEquals(requestedBackend(), "wasm"));
  withEnv("wasm", () => assertEquals(requestedBackend("cpu"), "cpu"));
  withEnv(
    "gpu",
    () => assertThrows(() => requestedBackend(), InvalidArgument, "BERTFORGE_BACKEND must be one of"),
  );
  assertThrows(() => requestedBackend("tpu"), InvalidArgument, "current value is 'tpu'");
});

Deno.test("createEngine() builds the named backend and logs the choice", async () => {
  const lines: string[] = [];
  const engine = await createEngine({ config, head, backend: "cpu", log: (m) => lines.push(m) });
  assertEquals(engine.backend, "cpu");
  assertStringIncludes(lines[0]!, "'cpu'");
  engine.dispose();
  await assertRejects(
    () => createEngine({ config, head, backend: "tensorflow", log: () => {} }),
    Unavailable,
    "tfjs-node",
  );
});

Deno.test("createEngine({backend: 'auto'}) picks the fastest that loads and says why it passed the others", async () => {
  const lines: string[] = [];
  const engine = await createEngine({ config, head, backend: "auto", log: (m) => lines.push(m) });
  assert(AUTO_ORDER.indexOf(engine.backend) >= 1, "tensorflow cannot load on this machine");
  assertStringIncludes(lines[0]!, `'${engine.backend}' (auto`);
  assertStringIncludes(lines[0]!, "passed over tensorflow:");
  const batch = {
    B: 1,
    T: 3,
    inputIds: new Int32Array([2, 7, 3]),
    tokenTypeIds: new Int32Array(3),
    attentionMask: new Int32Array([1, 1, 1]),
    labels: new Int32Array([1]),
  };
  assert(Number.isFinite(engine.trainStep(batch).loss));
  engine.dispose();
  // A bad config is the caller's error on every backend: no fallback hides it.
  await assertRejects(
    () => createEngine({ config, head: { task: "classify", numLabels: 0 }, backend: "auto", log: () => {} }),
    InvalidArgument,
  );
});

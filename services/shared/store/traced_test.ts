import { assert, assertEquals, assertRejects } from "@std/assert";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { NotFound } from "../errors.ts";
import { setupTelemetry, withSpan } from "../telemetry/otel.ts";
import { LocalStore } from "./local.ts";
import { openStore } from "./mod.ts";
import { tracedStore } from "./traced.ts";

Deno.test("tracedStore() makes a CLIENT span per operation inside a trace, none outside one", async () => {
  const exporter = new InMemorySpanExporter();
  const telemetry = setupTelemetry({ serviceName: "test", exporter });
  const dir = await Deno.makeTempDir({ prefix: "bertforge-traced-store-" });
  const store = openStore({ dir });
  try {
    assertEquals(tracedStore(store), store, "wrapping twice would double every span");
    await store.put("corpora/a/outside.txt", "no trace here");
    assertEquals(exporter.getFinishedSpans().length, 0, "background work outside a trace makes no spans");

    await withSpan("call", {}, async () => {
      await store.put("corpora/a/train.txt", "床前明月光");
      assertEquals(new TextDecoder().decode(await store.get("corpora/a/train.txt")), "床前明月光");
      await assertRejects(() => store.get("corpora/a/missing.txt"), NotFound);
      await assertRejects(() => store.get("corpora/a/../x"));
      assertEquals((await Array.fromAsync(store.list("corpora/a/"))).length, 2);
    });
    await telemetry.forceFlush();
    const spans = exporter.getFinishedSpans();
    const call = spans.find((s) => s.name === "call")!;
    const ops = spans.filter((s) => s.name.startsWith("store."));
    assertEquals(ops.map((s) => s.name), ["store.put", "store.get", "store.get", "store.get", "store.list"]);
    for (const op of ops) {
      assertEquals(op.kind, SpanKind.CLIENT);
      assertEquals(op.parentSpanId, call.spanContext().spanId);
      assertEquals(op.attributes["bertforge.store.kind"], "local");
    }
    const [put, get, missing, bad, list] = ops;
    assertEquals(put!.attributes["bertforge.store.key"], "corpora/a/train.txt");
    assertEquals(put!.attributes["bertforge.store.bytes"], 15);
    assertEquals(get!.attributes["bertforge.store.bytes"], 15);
    // A missing object is an answer callers probe for, not a failure; a malformed key is one.
    assertEquals(missing!.attributes["bertforge.store.found"], false);
    assertEquals(missing!.status.code, SpanStatusCode.UNSET);
    assertEquals(bad!.status.code, SpanStatusCode.ERROR);
    assertEquals(list!.attributes["bertforge.store.prefix"], "corpora/a/");
    assertEquals(list!.attributes["bertforge.store.entries"], 2);
    assert(store.kind === "local" && store.location === new LocalStore(dir).location);
  } finally {
    await store.close();
    await telemetry.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

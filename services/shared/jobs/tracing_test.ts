import { assert, assertEquals } from "@std/assert";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { LocalStore } from "../store/local.ts";
import { tracedStore } from "../store/traced.ts";
import { setupTelemetry, withSpan } from "../telemetry/otel.ts";
import { JobManager } from "./jobs.ts";

Deno.test("a job queued behind another runs in a job.run span of its own submit call's trace", async () => {
  const exporter = new InMemorySpanExporter();
  const telemetry = setupTelemetry({ serviceName: "test", exporter });
  const dir = await Deno.makeTempDir({ prefix: "bertforge-jobs-tracing-" });
  const manager = new JobManager(tracedStore(new LocalStore(dir)), { concurrency: 1, progressIntervalMs: 0 });
  const { promise: firstMayEnd, resolve: endFirst } = Promise.withResolvers<void>();
  manager.register<{ wait: boolean }, null>("work", {
    run: async (ctx) => {
      if (ctx.spec.wait) await firstMayEnd;
      await ctx.store.putJson(`${ctx.prefix}out.json`, { done: true });
      return null;
    },
  });
  try {
    const first = await withSpan("submit-1", {}, () => manager.submit("work", { wait: true }));
    // The second starts only when the first ends, from the first job's promise chain: without the context
    // captured at submit it would land in the first job's trace.
    const second = await withSpan("submit-2", {}, () => manager.submit("work", { wait: false }));
    endFirst();
    await manager.idle();
    await telemetry.forceFlush();
    const spans = exporter.getFinishedSpans();
    const named = (name: string) => spans.find((s) => s.name === name)!;
    const jobSpan = (id: string) => {
      const span = spans.find((s) => s.name === "job.run" && s.attributes["bertforge.job.id"] === id);
      assert(span, `a job.run span for ${id} among ${spans.map((s) => s.name)}`);
      return span;
    };
    for (const [id, submit] of [[first, named("submit-1")], [second, named("submit-2")]] as const) {
      const job = jobSpan(id);
      assertEquals(job.spanContext().traceId, submit.spanContext().traceId);
      assertEquals(job.parentSpanId, submit.spanContext().spanId);
      assertEquals(job.attributes["bertforge.job.kind"], "work");
      assertEquals(job.attributes["bertforge.job.state"], "SUCCEEDED");
      // The runner's store writes are children of its job span.
      const write = spans.find((s: ReadableSpan) =>
        s.name === "store.put" && s.attributes["bertforge.store.key"] === `jobs/${id}/out.json`
      );
      assertEquals(write?.parentSpanId, job.spanContext().spanId);
    }
  } finally {
    await manager.close();
    await telemetry.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a job resumed by another manager starts its own trace, linked to the submit call", async () => {
  const exporter = new InMemorySpanExporter();
  const telemetry = setupTelemetry({ serviceName: "test", exporter });
  const dir = await Deno.makeTempDir({ prefix: "bertforge-jobs-tracing-" });
  const store = tracedStore(new LocalStore(dir));
  const { promise: started, resolve: markStarted } = Promise.withResolvers<void>();
  const first = new JobManager(store).register("resumable", {
    onInterrupted: "resume",
    run: async (ctx) => {
      markStarted();
      await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
    },
  });
  const second = new JobManager(store).register("resumable", {
    onInterrupted: "resume",
    run: () => Promise.resolve(),
  });
  try {
    const id = await withSpan("submit", {}, () => first.submit("resumable", {}));
    await started;
    await first.close(); // as if the process died: the job stays RUNNING in the store
    assertEquals((await second.recover()).resumed, [id]);
    await second.idle();
    await telemetry.forceFlush();
    const spans = exporter.getFinishedSpans();
    const submit = spans.find((s) => s.name === "submit")!;
    const resumed = spans.find((s) => s.name === "job.run" && s.attributes["bertforge.job.attempt"] === 2);
    assert(resumed, `a job.run span of attempt 2 among ${spans.map((s) => s.name)}`);
    assertEquals(resumed.parentSpanId, undefined);
    assert(resumed.spanContext().traceId !== submit.spanContext().traceId);
    assertEquals(resumed.links.map((l) => l.context.spanId), [submit.spanContext().spanId]);
    assertEquals(resumed.attributes["bertforge.job.state"], "SUCCEEDED");
  } finally {
    await second.close();
    await telemetry.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

import { assert, assertEquals } from "@std/assert";
import { InMemorySpanExporter, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import { ExportResultCode } from "@opentelemetry/core";
import { SpanKind } from "@opentelemetry/api";
import { client, serve } from "../rpc/mod.ts";
import { exporterFromEnv, resourceAttributes, setupTelemetry, withSpan } from "./otel.ts";

const quiet = { handleSignals: false, port: 0 } as const;

Deno.test("one client call through two services yields one trace with parent-child spans", async () => {
  const exporter = new InMemorySpanExporter();
  const telemetry = setupTelemetry({ serviceName: "test", exporter });
  assert(telemetry.enabled);
  const tokenizer = await serve({
    ...quiet,
    service: "TokenizerService",
    handlers: {
      Tokenize: async ({ inputs }) =>
        await withSpan(
          "wordpiece.encode",
          { inputs: inputs.length },
          () => ({ encodings: [{ ids: [101, 102] }] }),
        ),
    },
  });
  const toTokenizer = client("TokenizerService", tokenizer.address);
  const sharding = await serve({
    ...quiet,
    service: "ShardingService",
    handlers: {
      // The sharder asks the tokenizer inside its own handler: the trace context must follow.
      InspectShards: async () => {
        const { encodings } = await toTokenizer.unary("Tokenize", { vocab: "v", inputs: [{ text: "hi" }] });
        return { instances: [{ input_ids: encodings[0].ids }] };
      },
    },
  });
  const toSharding = client("ShardingService", sharding.address);
  try {
    const response = await toSharding.unary("InspectShards", { name: "s" });
    assertEquals(response.instances[0].input_ids, [101, 102]);
    await telemetry.forceFlush();
    const spans = exporter.getFinishedSpans();
    const byName = (name: string, kind: SpanKind) => {
      const span = spans.find((s) => s.name === name && s.kind === kind);
      assert(
        span,
        `a ${SpanKind[kind]} span ${name} among ${spans.map((s) => `${SpanKind[s.kind]}:${s.name}`)}`,
      );
      return span;
    };
    const rootClient = byName("bertforge.v1.ShardingService/InspectShards", SpanKind.CLIENT);
    const shardingServer = byName("bertforge.v1.ShardingService/InspectShards", SpanKind.SERVER);
    const innerClient = byName("bertforge.v1.TokenizerService/Tokenize", SpanKind.CLIENT);
    const tokenizerServer = byName("bertforge.v1.TokenizerService/Tokenize", SpanKind.SERVER);
    const encode = byName("wordpiece.encode", SpanKind.INTERNAL);
    const traceIds = new Set(spans.map((s) => s.spanContext().traceId));
    assertEquals(traceIds.size, 1, "every span is in one trace");
    assertEquals(rootClient.parentSpanId, undefined);
    assertEquals(shardingServer.parentSpanId, rootClient.spanContext().spanId);
    assertEquals(innerClient.parentSpanId, shardingServer.spanContext().spanId);
    assertEquals(tokenizerServer.parentSpanId, innerClient.spanContext().spanId);
    assertEquals(encode.parentSpanId, tokenizerServer.spanContext().spanId);
    assertEquals(tokenizerServer.attributes["rpc.grpc.status_code"], 0);
  } finally {
    toSharding.close();
    toTokenizer.close();
    await sharding.shutdown();
    await tokenizer.shutdown();
    await telemetry.shutdown();
  }
});

Deno.test("tracing stays off unless the OTEL_* variables ask for it", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assertEquals(exporterFromEnv(env({})), undefined);
  assertEquals(
    exporterFromEnv(env({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318" })),
    undefined,
  );
  assertEquals(
    exporterFromEnv(env({ OTEL_SDK_DISABLED: "true", OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318" })),
    undefined,
  );
  assert(exporterFromEnv(env({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" })) !== undefined);
  assert(exporterFromEnv(env({ OTEL_TRACES_EXPORTER: "console" })) !== undefined);
  const off = setupTelemetry({ serviceName: "x", env: env({}) });
  assertEquals(off.enabled, false);
});

Deno.test("resourceAttributes() adds OTEL_RESOURCE_ATTRIBUTES and lets OTEL_SERVICE_NAME rename the service", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assertEquals(resourceAttributes("bertforge-trainer", env({})), { "service.name": "bertforge-trainer" });
  assertEquals(
    resourceAttributes(
      "bertforge-trainer",
      env({
        OTEL_RESOURCE_ATTRIBUTES: "k8s.pod.name=trainer-0, deployment.environment=a%2Cb,broken,=x,bad=%E0",
      }),
    ),
    { "service.name": "bertforge-trainer", "k8s.pod.name": "trainer-0", "deployment.environment": "a,b" },
  );
  assertEquals(
    resourceAttributes("bertforge-trainer", env({ OTEL_SERVICE_NAME: "gpu-trainer" }))["service.name"],
    "gpu-trainer",
  );
});

Deno.test("an exporter that fails (collector down) costs a warning, never a failed flush or shutdown", async () => {
  const failing: SpanExporter = {
    export: (_spans, done) =>
      done({ code: ExportResultCode.FAILED, error: new Error("connect ECONNREFUSED") }),
    shutdown: () => Promise.resolve(),
  };
  const telemetry = setupTelemetry({ serviceName: "bertctl", exporter: failing, simple: false });
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (message: string) => warnings.push(message);
  try {
    await withSpan("bertctl models list", {}, () => {});
    await telemetry.forceFlush();
    await withSpan("bertctl models list", {}, () => {});
    await telemetry.shutdown();
  } finally {
    console.warn = warn;
  }
  assertEquals(warnings.length, 2);
  assert(
    warnings.every((w) => w.includes("bertctl could not be exported") && w.includes("ECONNREFUSED")),
    `${warnings}`,
  );
});

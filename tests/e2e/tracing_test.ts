/**
 * One trace per pipeline call, as an operator's collector would receive it: the fleet and bertctl export
 * OTLP/HTTP JSON (what `@opentelemetry/exporter-trace-otlp-http` sends) to a receiver started here on
 * loopback, and the test rebuilds the span trees of a `shards build` and of a `predict` from what arrived.
 */
import { assert, assertEquals, assertGreater } from "@std/assert";
import { fromFileUrl, join } from "@std/path";
import { startFleet } from "../../services/cli/fleet.ts";
import { loadSettings } from "../../services/shared/config/settings.ts";
import { initWeights, saveModelDir } from "../../services/shared/model/checkpoint.ts";
import type { BertConfig } from "../../services/shared/model/config.ts";
import { LocalStore, publish } from "../../services/shared/store/mod.ts";
import { documentText, poetryDir, readPoems } from "../../services/cli/demo/poetry.ts";

const ROOT = fromFileUrl(new URL("../..", import.meta.url));
const KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const;

interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  service: string;
  resource: Record<string, unknown>;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string }[];
}

type OtlpValue = {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
};

function otlpValue(value: OtlpValue): unknown {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  return undefined;
}

function attributesOf(list: { key: string; value: OtlpValue }[] = []): Record<string, unknown> {
  return Object.fromEntries(list.map(({ key, value }) => [key, otlpValue(value)]));
}

/** An OTLP/HTTP receiver for JSON-encoded traces (`POST /v1/traces`), keeping every span it is sent. */
function startReceiver() {
  const spans: ReceivedSpan[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const url = new URL(request.url);
    if (request.method !== "POST" || url.pathname !== "/v1/traces") {
      return new Response("not found", { status: 404 });
    }
    const type = request.headers.get("content-type") ?? "";
    if (!type.includes("json")) return new Response(`expected JSON, got ${type}`, { status: 415 });
    // deno-lint-ignore no-explicit-any
    const body: any = await request.json();
    for (const resourceSpans of body.resourceSpans ?? []) {
      const resource = attributesOf(resourceSpans.resource?.attributes);
      const service = String(resource["service.name"] ?? "");
      for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
        for (const span of scopeSpans.spans ?? []) {
          spans.push({
            traceId: span.traceId,
            spanId: span.spanId,
            parentSpanId: span.parentSpanId ?? "",
            name: span.name,
            kind: span.kind,
            service,
            resource,
            attributes: attributesOf(span.attributes),
            // deno-lint-ignore no-explicit-any
            links: (span.links ?? []).map((l: any) => ({ traceId: l.traceId, spanId: l.spanId })),
          });
        }
      }
    }
    return Response.json({});
  });
  return { spans, port: server.addr.port, close: () => server.shutdown() };
}

/**
 * Runs `check` until it stops throwing: services export in batches (every 200 ms here), each process on its own
 * clock, so a trace fills in over a moment after the command returns. The last failure is the one reported.
 */
async function eventually<T>(check: () => T, timeoutMs = 30_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  while (true) {
    try {
      return check();
    } catch (error) {
      if (Date.now() > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

function describe(spans: ReceivedSpan[]): string {
  return spans.map((s) =>
    `${s.traceId.slice(0, 8)} ${s.spanId} <- ${s.parentSpanId || "(root)"} ${s.service} ${s.kind} ${s.name} ${
      JSON.stringify(s.attributes)
    }`
  ).join("\n");
}

/** The spans of one trace, with helpers to walk it. */
function treeOf(all: ReceivedSpan[], traceId: string) {
  const spans = all.filter((s) => s.traceId === traceId);
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const children = (parent: ReceivedSpan) => spans.filter((s) => s.parentSpanId === parent.spanId);
  const child = (parent: ReceivedSpan, match: (s: ReceivedSpan) => boolean, what: string) => {
    const found = children(parent).filter(match);
    assert(
      found.length > 0,
      `${what} under ${parent.service}:${parent.name}; the trace is:\n${describe(spans)}`,
    );
    return found[0]!;
  };
  const descendants = (parent: ReceivedSpan): ReceivedSpan[] =>
    children(parent).flatMap((c) => [c, ...descendants(c)]);
  return { spans, byId, children, child, descendants };
}

const rpc = (name: string, kind: number, service: string) => (s: ReceivedSpan) =>
  s.name === `bertforge.v1.${name}` && s.kind === kind && s.service === service;

/** Odd sizes, so a swapped dimension fails loudly; the bert-base-chinese vocabulary. */
function tinyConfig(vocabText: string): BertConfig {
  return {
    vocab_size: vocabText.trimEnd().split("\n").length,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    intermediate_size: 37,
    hidden_act: "gelu",
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    max_position_embeddings: 64,
    type_vocab_size: 2,
    initializer_range: 0.02,
    layer_norm_eps: 1e-12,
    pad_token_id: 0,
    model_type: "bert",
  };
}

/** A tiny classifier in the store for `predict` to auto-load. */
async function publishTinyClassifier(storeDir: string, vocabText: string): Promise<void> {
  const config = tinyConfig(vocabText);
  const head = { task: "classify" as const, numLabels: 2 };
  const modelDir = join(storeDir, "..", "tiny-model");
  await saveModelDir(modelDir, {
    config,
    head,
    labels: ["negative", "positive"],
    weights: initWeights(config, head, 7),
    vocabText,
  });
  const parts: Record<string, Uint8Array> = {};
  for await (const entry of Deno.readDir(modelDir)) {
    parts[entry.name] = await Deno.readFile(join(modelDir, entry.name));
  }
  await publish(new LocalStore(storeDir), "models/tiny-clf/20260101T000000Z", parts, {
    metadata: {
      kind: "model",
      name: "tiny-clf",
      version: "20260101T000000Z",
      task: "classify",
      source: "test",
    },
  });
}

async function bertctl(portBase: number, args: string[]): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "services/cli/bertctl.ts"),
      "--port-base",
      String(portBase),
      ...args,
      "--json",
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(stdout);
  assertEquals(code, 0, `bertctl ${args.join(" ")} failed:\n${out}\n${new TextDecoder().decode(stderr)}`);
  return out;
}

Deno.test({
  name:
    "tracing: shards build, vocab train, train pretrain, predict (gRPC, HTTP) are each one trace from bertctl to the store",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const receiver = startReceiver();
    const work = await Deno.makeTempDir({ prefix: "bertforge-tracing-" });
    const storeDir = join(work, "store");
    const vocabText = await Deno.readTextFile(
      join(ROOT, "tests/fixtures/tokenizer/bert-base-chinese-vocab.txt"),
    );
    await Deno.mkdir(join(work, "vocab"));
    await Deno.writeTextFile(join(work, "vocab", "vocab.txt"), vocabText);
    const documents: string[] = [];
    for await (const poem of readPoems(poetryDir(ROOT), "tang", 150)) documents.push(documentText(poem));
    await Deno.writeTextFile(join(work, "poems.txt"), documents.join("\n\n") + "\n");
    await publishTinyClassifier(storeDir, vocabText);

    // The services inherit these; bertctl (a child of this process) too.
    Deno.env.set("OTEL_EXPORTER_OTLP_ENDPOINT", `http://127.0.0.1:${receiver.port}`);
    Deno.env.set("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    Deno.env.set("OTEL_BSP_SCHEDULE_DELAY", "200");
    Deno.env.set("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=tracing-test");
    const portBase = 53_000 + Math.floor(Math.random() * 90) * 10;
    const logs: string[] = [];
    const fleet = await startFleet({
      settings: loadSettings(undefined, {
        args: ["--store", storeDir, "--port-base", String(portBase), "--log-level", "warn"],
        env: () => undefined,
      }),
      output: (line) => logs.push(line),
    });
    try {
      // --- shards build: bertctl → tokenizer (corpus upload, vocab import) → sharding → job → store
      await bertctl(portBase, [
        "shards",
        "build",
        "--corpus",
        join(work, "poems.txt"),
        "--vocab",
        join(work, "vocab"),
        "--seq-len",
        "32",
        "--name",
        "traced-shards",
      ]);
      const rootOf = (name: string) => {
        const root = receiver.spans.find((s) => s.name === name && s.service === "bertctl");
        assert(root, `a root span "${name}" from bertctl; received:\n${describe(receiver.spans)}`);
        return root;
      };
      await eventually(() => {
        const buildRoot = rootOf("bertctl shards build");
        assertEquals(buildRoot.parentSpanId, "", "the command's span is the root of its trace");
        const ctlTraces = new Set(
          receiver.spans.filter((s) => s.service === "bertctl").map((s) => s.traceId),
        );
        assertEquals(ctlTraces.size, 1, "every span bertctl made for the command is in one trace");
        const build = treeOf(receiver.spans, buildRoot.traceId);

        // The corpus upload reaches the tokenizer, which writes it to the store.
        const upload = build.child(
          buildRoot,
          rpc("TokenizerService/UploadCorpus", KIND.CLIENT, "bertctl"),
          "upload",
        );
        const uploadServer = build.child(
          upload,
          rpc("TokenizerService/UploadCorpus", KIND.SERVER, "bertforge-tokenizer"),
          "the tokenizer's server span",
        );
        assert(
          build.descendants(uploadServer).some((s) =>
            s.name === "store.put" && s.kind === KIND.CLIENT &&
            String(s.attributes["bertforge.store.key"]).startsWith("corpora/")
          ),
          `the upload writes under corpora/:\n${describe(build.spans)}`,
        );

        // The build: client → sharding server → the job (run after the call returned) → its store writes.
        const start = build.child(
          buildRoot,
          rpc("ShardingService/StartBuildPretraining", KIND.CLIENT, "bertctl"),
          "the StartBuildPretraining call",
        );
        const startServer = build.child(
          start,
          rpc("ShardingService/StartBuildPretraining", KIND.SERVER, "bertforge-sharding"),
          "the sharding server span",
        );
        const job = build.child(startServer, (s) => s.name === "job.run", "the build job");
        assertEquals(job.service, "bertforge-sharding");
        assertEquals(job.attributes["bertforge.job.state"], "SUCCEEDED");
        assertGreater(Number(job.attributes["bertforge.job.result.instances"]), 0);
        const jobStore = build.descendants(job).filter((s) => s.name.startsWith("store."));
        const keys = jobStore.map((s) =>
          String(s.attributes["bertforge.store.key"] ?? s.attributes["bertforge.store.prefix"])
        );
        assert(keys.some((k) => k.startsWith("corpora/")), `the job reads the corpus: ${keys}`);
        assert(keys.some((k) => k.startsWith("vocabs/")), `the job reads the vocab: ${keys}`);
        assert(
          keys.includes("shards/traced-shards/MANIFEST.json"),
          `the job publishes the manifest: ${keys}`,
        );
        assert(
          jobStore.every((s) => s.kind === KIND.CLIENT && s.attributes["bertforge.store.kind"] === "local"),
        );
        // The sharding service builds in-process: it never calls the tokenizer service.
        assertEquals(
          build.descendants(startServer).filter((s) => s.name.startsWith("bertforge.v1.TokenizerService/")),
          [],
        );
        // bertctl then follows the job over the same trace.
        build.child(buildRoot, rpc("ShardingService/WatchJob", KIND.CLIENT, "bertctl"), "the watch");
      });

      // --- vocab train: bertctl → tokenizer → the vocab job → its reads and the published vocab
      await bertctl(portBase, [
        "vocab",
        "train",
        "--corpus",
        "poems",
        "--size",
        "300",
        "--name",
        "traced-vocab",
      ]);
      await eventually(() => {
        const vocabRoot = rootOf("bertctl vocab train");
        const vocab = treeOf(receiver.spans, vocabRoot.traceId);
        const vocabJob = vocab.child(
          vocab.child(
            vocab.child(
              vocabRoot,
              rpc("TokenizerService/StartTrainVocab", KIND.CLIENT, "bertctl"),
              "the call",
            ),
            rpc("TokenizerService/StartTrainVocab", KIND.SERVER, "bertforge-tokenizer"),
            "the tokenizer's server span",
          ),
          (s) => s.name === "job.run",
          "the vocab job",
        );
        assertEquals(vocabJob.attributes["bertforge.job.kind"], "train_vocab");
        assert(
          vocab.descendants(vocabJob).some((s) =>
            s.name === "store.put" && s.attributes["bertforge.store.key"] === "vocabs/traced-vocab/vocab.txt"
          ),
          describe(vocab.spans),
        );
      });

      // --- train pretrain: the trainer's steps are spans of the job, under the SubmitJob call's trace
      const configPath = join(work, "tiny-config.json");
      await Deno.writeTextFile(configPath, JSON.stringify(tinyConfig(vocabText)));
      await bertctl(portBase, [
        "train",
        "pretrain",
        "--shards",
        "traced-shards",
        "--arch",
        configPath,
        "--steps",
        "3",
        "--batch",
        "4",
        "--name",
        "traced-bert",
      ]);
      await eventually(() => {
        const trainRoot = rootOf("bertctl train pretrain");
        const training = treeOf(receiver.spans, trainRoot.traceId);
        const submit = training.child(
          trainRoot,
          rpc("TrainerService/SubmitJob", KIND.CLIENT, "bertctl"),
          "submit",
        );
        const submitServer = training.child(
          submit,
          rpc("TrainerService/SubmitJob", KIND.SERVER, "bertforge-trainer"),
          "the trainer's server span",
        );
        const trainJob = training.child(submitServer, (s) => s.name === "job.run", "the training job");
        assertEquals(trainJob.attributes["bertforge.job.state"], "SUCCEEDED");
        const steps = training.descendants(trainJob).filter((s) => s.name === "trainer.step");
        assertEquals(steps.map((s) => s.attributes["bertforge.step"]).sort(), [1, 2, 3]);
        for (const step of steps) {
          assertEquals(step.service, "bertforge-trainer");
          assert(
            Number.isFinite(step.attributes["bertforge.loss"]),
            `loss on ${JSON.stringify(step.attributes)}`,
          );
          assertGreater(Number(step.attributes["bertforge.tokens_per_s"]), 0);
        }
        assert(
          training.descendants(trainJob).some((s) =>
            s.name === "store.put" &&
            String(s.attributes["bertforge.store.key"]).startsWith("models/traced-bert/")
          ),
          `the job publishes the model:\n${describe(training.spans)}`,
        );
      });

      // --- predict: bertctl → inference server → the batch that served it (auto-loading the model)
      const before = new Set(receiver.spans.map((s) => s.traceId));
      await bertctl(portBase, ["predict", "--model", "tiny-clf", "--text", "白日依山盡，黃河入海流。"]);
      await eventually(() => {
        const predictRoot = rootOf("bertctl predict");
        assert(!before.has(predictRoot.traceId), "predict starts a trace of its own");
        const predict = treeOf(receiver.spans, predictRoot.traceId);
        assertEquals(
          new Set(predict.spans.filter((s) => s.service === "bertctl").map((s) => s.traceId)).size,
          1,
        );
        const classify = predict.child(
          predictRoot,
          rpc("InferenceService/ClassifyBatch", KIND.CLIENT, "bertctl"),
          "the ClassifyBatch call",
        );
        const classifyServer = predict.child(
          classify,
          rpc("InferenceService/ClassifyBatch", KIND.SERVER, "bertforge-inference"),
          "the inference server span",
        );
        const batch = predict.child(classifyServer, (s) => s.name === "inference.batch", "the batch");
        assertEquals(batch.service, "bertforge-inference");
        assertEquals(batch.attributes["bertforge.batch.size"], 1);
        assertEquals(batch.attributes["bertforge.model"], "tiny-clf");
        assertGreater(Number(batch.attributes["bertforge.batch.seq_len"]), 2);
        assert(
          batch.links.some((l) => l.spanId === classifyServer.spanId && l.traceId === predictRoot.traceId),
          "the batch links the request it served",
        );
        // The first request for the model loaded it from the store, inside this trace.
        const modelReads = predict.spans.filter((s) =>
          s.name.startsWith("store.") &&
          String(s.attributes["bertforge.store.key"] ?? "").startsWith("models/tiny-clf/")
        );
        assert(
          modelReads.length > 0,
          `the model is read from the store in the trace:\n${describe(predict.spans)}`,
        );
      });

      // Over HTTP/JSON the inference service continues the caller's traceparent, and its batch follows.
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736", callerSpan = "00f067aa0ba902b7";
      const answer = await fetch(`http://127.0.0.1:${portBase + 5}/v1/models/tiny-clf:classify`, {
        method: "POST",
        headers: { "content-type": "application/json", traceparent: `00-${traceId}-${callerSpan}-01` },
        body: JSON.stringify({ text: "大漠孤煙直" }),
      });
      assertEquals(answer.status, 200, await answer.text());
      await eventually(() => {
        const http = treeOf(receiver.spans, traceId);
        const httpServer = http.spans.find((s) => s.parentSpanId === callerSpan);
        assert(httpServer, `a server span under the caller's span:\n${describe(http.spans)}`);
        assertEquals(httpServer.name, "POST /v1/models/{model}:classify");
        assertEquals(httpServer.kind, KIND.SERVER);
        assertEquals(httpServer.attributes["http.response.status_code"], 200);
        http.child(httpServer, (s) => s.name === "inference.batch", "the batch of the HTTP request");
      });

      // Resources name every service that took part.
      const services = new Set(receiver.spans.map((s) => s.service));
      for (const name of ["bertctl", "bertforge-tokenizer", "bertforge-sharding", "bertforge-inference"]) {
        assert(services.has(name), `spans from ${name} among ${[...services]}`);
      }
      assert(receiver.spans.every((s) => s.resource["deployment.environment"] === "tracing-test"));
    } catch (error) {
      console.error(logs.slice(-40).join("\n"));
      throw error;
    } finally {
      await fleet.stop();
      await receiver.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

/**
 * `deno task bench inference [--duration 5] [--concurrency 1,8,32] [--arch bert-mini] [--max-input-length 128]
 *   [--saturate 256] [--threads N]`
 *
 * Starts the inference service as a child process on a bert-mini-shaped classifier with random weights (the
 * bert-base-chinese vocabulary, so text tokenizes as in production), once per serving backend (`native`, and
 * `onnx` when the shared ONNX exporter is present), then drives it the way deploy/k6 does:
 * HTTP with autocannon and gRPC with a grpc-js client pool, at each concurrency, with the k6 scripts' mix of
 * short and long Chinese and English reviews. One JSON line per run:
 *
 *   {"bench":"inference","impl":"bertforge","protocol":"http"|"grpc","model":..,"concurrency":..,
 *    "requests_per_s":..,"p50_ms":..,"p99_ms":..,"errors":..,"rejected":..,"server_rss_mb":..}
 *
 * Then a saturation run far above `--max-concurrent-requests` (expect 429s, no timeouts, bounded memory), and
 * the in-process references on the same model and texts in batches of `concurrency` inputs (`batching`:
 * `mixed` padded to the longest, or `one-length`, no padding at all): the native engine
 * (`impl: engine-inprocess`) and ONNX Runtime (`impl: onnxruntime`) when the shared exporter can write a
 * `model.onnx`, else a line saying why it is skipped. `mean_batch` is the server's inputs per forward pass.
 * Timings on shared CPUs are noisy: compare lines of one run, not across machines.
 */
import { parseArgs } from "@std/cli";
import { join } from "@std/path";
import autocannon from "autocannon";
import * as grpc from "@grpc/grpc-js";
import { clientConstructor, fullServiceName } from "../../services/shared/rpc/mod.ts";
import { LocalStore } from "../../services/shared/store/mod.ts";
import { initWeights, saveModelDir } from "../../services/shared/model/checkpoint.ts";
import { presetConfig } from "../../services/shared/model/config.ts";
import { publish } from "../../services/shared/store/publish.ts";
import { WordPieceTokenizer } from "../../services/shared/wordpiece/mod.ts";
import { createServingBackend, loadOrt } from "../../services/inference/backends.ts";
import { loadOnnxExporter } from "../../services/inference/testing.ts";

const TEXTS = [
  "这家酒店位置很好，服务也周到，下次还会再来。",
  "房间太小，隔音很差，一晚上都没睡好。",
  "The battery lasts two days and the screen is sharp, but the speaker is weak.",
  "Terrible.",
  "物流很快，包装完好，书的纸张质量不错，内容也很有意思，推荐给喜欢历史的朋友。".repeat(3),
];

const MODEL = "bench-classifier";

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const round = (x: number, digits = 2) => Number(x.toFixed(digits));

/** Forward passes and inputs so far, from the server's Prometheus metrics. */
async function batchCounters(http: string): Promise<{ passes: number; inputs: number }> {
  try {
    const text = await (await fetch(`${http}/metrics`)).text();
    const value = (name: string) =>
      text.split("\n").filter((l) => l.startsWith(name)).reduce(
        (sum, l) => sum + Number(l.split(" ").at(-1)),
        0,
      );
    return { passes: value("bertforge_batch_size_count"), inputs: value("bertforge_batch_size_sum") };
  } catch {
    return { passes: NaN, inputs: NaN };
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function rssMb(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Math.round(Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024);
  } catch {
    return NaN;
  }
}

/** Publishes a bert-mini-shaped (or other preset) classifier with random weights; returns the store folder. */
async function publishModel(arch: string): Promise<{ dir: string; vocabText: string }> {
  const vocabText = await Deno.readTextFile(
    new URL("../fixtures/tokenizer/bert-base-chinese-vocab.txt", import.meta.url),
  );
  const vocabSize = vocabText.trimEnd().split("\n").length;
  const config = presetConfig(arch, vocabSize);
  const head = { task: "classify" as const, numLabels: 2 };
  const dir = await Deno.makeTempDir({ prefix: "bertforge-bench-inference-" });
  const modelDir = join(dir, "tmp-model");
  const weights = initWeights(config, head, 1);
  await saveModelDir(modelDir, { config, head, labels: ["negative", "positive"], weights, vocabText });
  const exportOnnx = await loadOnnxExporter();
  if (exportOnnx) await exportOnnx(join(modelDir, "model.onnx"), { config, head, weights });
  const parts: Record<string, Uint8Array> = {};
  for await (const entry of Deno.readDir(modelDir)) {
    parts[entry.name] = await Deno.readFile(join(modelDir, entry.name));
  }
  await publish(new LocalStore(join(dir, "store")), `models/${MODEL}/20260101T000000Z`, parts, {
    metadata: { kind: "model", name: MODEL, version: "20260101T000000Z", task: "classify", source: "bench" },
  });
  await Deno.remove(modelDir, { recursive: true });
  return { dir, vocabText };
}

interface Server {
  process: Deno.ChildProcess;
  /** Set once the process has exited (its status), so later runs report it instead of counting refusals. */
  exited?: string;
  grpc: string;
  http: string;
  stop(): Promise<void>;
}

async function startServer(storeDir: string, extra: string[]): Promise<Server> {
  const port = freePort(), httpPort = freePort();
  const main = new URL("../../services/inference/main.ts", import.meta.url).pathname;
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      main,
      "--store",
      storeDir,
      "--port",
      String(port),
      "--http-port",
      String(httpPort),
      "--models",
      MODEL,
      "--log-level",
      "warn",
      "--reload-interval-ms",
      "0",
      ...extra,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const http = `http://127.0.0.1:${httpPort}`;
  const until = Date.now() + 120_000;
  let exited: string | undefined;
  process.status.then((
    status,
  ) => (exited = `code ${status.code}${status.signal ? `, ${status.signal}` : ""}`));
  while (true) {
    try {
      const response = await fetch(`${http}/health`);
      await response.body?.cancel();
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error("the inference service did not become ready within 120 s");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    process,
    get exited() {
      return exited;
    },
    grpc: `127.0.0.1:${port}`,
    http,
    async stop() {
      try {
        process.kill("SIGTERM");
      } catch {
        // already gone
      }
      await process.status;
    },
  };
}

async function driveHttp(url: string, connections: number, seconds: number) {
  const requests = TEXTS.map((text) => ({
    method: "POST" as const,
    path: `/v1/models/${MODEL}:classify`,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ text }),
  }));
  const result = await autocannon({ url, connections, duration: seconds, requests, timeout: 10 });
  const ok = result["2xx"] ?? 0;
  return {
    requests_per_s: round(ok / seconds, 1),
    p50_ms: result.latency.p50,
    p99_ms: result.latency.p99,
    errors: result.errors + result.timeouts + (result.non2xx - (result.statusCodeStats?.["429"]?.count ?? 0)),
    rejected: result.statusCodeStats?.["429"]?.count ?? 0,
    timeouts: result.timeouts,
  };
}

/**
 * A pool of plain grpc-js channels (no tracing or retry interceptors, so the load generator stays cheap),
 * `concurrency` callers round-robin over them, each issuing its next call when the previous one answers.
 */
function grpcPool(address: string, size = 4): grpc.Client[] {
  const Client = clientConstructor(fullServiceName("InferenceService"));
  // A distinct option per channel, so grpc-js opens one connection each instead of sharing a subchannel.
  return Array.from(
    { length: size },
    (_, i) => new Client(address, grpc.credentials.createInsecure(), { "grpc.bench_channel": i }),
  );
}

async function driveGrpc(all: grpc.Client[], concurrency: number, seconds: number) {
  const pool = all.slice(0, Math.min(concurrency, all.length));
  await Promise.all(
    pool.map((c) =>
      new Promise<void>((resolve, reject) =>
        c.waitForReady(Date.now() + 10_000, (error) => (error ? reject(error) : resolve()))
      )
    ),
  );
  const latencies: number[] = [];
  let errors = 0, rejected = 0, i = 0;
  const until = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async (_, worker) => {
    const rpc = pool[worker % pool.length]! as unknown as Record<string, (...args: unknown[]) => void>;
    while (performance.now() < until) {
      const text = TEXTS[i++ % TEXTS.length]!;
      const started = performance.now();
      const code = await new Promise<number>((resolve) =>
        rpc.Classify!(
          { model: MODEL, text, options: { return_logits: false } },
          { deadline: Date.now() + 10_000 },
          (error: grpc.ServiceError | null) => resolve(error ? error.code : 0),
        )
      );
      if (code === 0) latencies.push(performance.now() - started);
      else if (code === grpc.status.RESOURCE_EXHAUSTED) rejected++;
      else errors++;
    }
  }));
  latencies.sort((a, b) => a - b);
  return {
    requests_per_s: round(latencies.length / seconds, 1),
    p50_ms: round(percentile(latencies, 50)),
    p99_ms: round(percentile(latencies, 99)),
    errors,
    rejected,
  };
}

/**
 * The same model in this process, batches of `batch` inputs back to back with no serving around them.
 * `mixed`: consecutive texts of the mix padded to the longest (batching without bucketing); `one-length`: each
 * batch is one text repeated, so nothing is padded (perfect bucketing, the upper bound of any batcher).
 */
async function inProcess(
  kind: "native" | "onnx",
  batching: "mixed" | "one-length",
  storeDir: string,
  vocabText: string,
  arch: string,
  maxLength: number,
  batch: number,
  seconds: number,
  threads: number | undefined,
) {
  const tokenizer = WordPieceTokenizer.fromVocabText(vocabText);
  const config = presetConfig(arch, tokenizer.idToToken.length);
  const head = { task: "classify" as const, numLabels: 2 };
  const store = new LocalStore(storeDir);
  const onnxKey = `models/${MODEL}/20260101T000000Z/model.onnx`;
  const onnx = kind === "onnx" ? await store.get(onnxKey) : undefined;
  const backend = await createServingBackend({
    config,
    head,
    weights: initWeights(config, head, 1),
    backend: kind,
    maxSeqLen: maxLength,
    maxBatchTokens: Math.max(4096, batch * maxLength),
    ...(threads ? { threads } : {}),
    ...(onnx ? { onnx } : {}),
    // The engine's own speed on this thread: the reference the served numbers are compared with.
    inProcess: true,
  });
  const encodings = TEXTS.map((t) => tokenizer.encode(t, undefined, { maxLength }));
  const latencies: number[] = [];
  let done = 0, i = 0;
  const until = performance.now() + seconds * 1000;
  while (performance.now() < until) {
    const chosen = batching === "mixed"
      ? Array.from({ length: batch }, () => encodings[i++ % encodings.length]!)
      : Array.from({ length: batch }, () => encodings[i % encodings.length]!);
    if (batching === "one-length") i++;
    const T = Math.max(...chosen.map((e) => e.ids.length));
    const inputIds = new Int32Array(batch * T), tokenTypeIds = new Int32Array(batch * T);
    const attentionMask = new Int32Array(batch * T);
    chosen.forEach((e, b) =>
      e.ids.forEach((id, t) => (inputIds[b * T + t] = id, attentionMask[b * T + t] = 1))
    );
    const started = performance.now();
    await backend.forward({ B: batch, T, inputIds, tokenTypeIds, attentionMask }, {});
    latencies.push(performance.now() - started);
    done += batch;
  }
  backend.dispose();
  latencies.sort((a, b) => a - b);
  return {
    requests_per_s: round(done / seconds, 1),
    batch_p50_ms: round(percentile(latencies, 50)),
    batch_p99_ms: round(percentile(latencies, 99)),
  };
}

export async function main(args: string[]): Promise<void> {
  const flags = parseArgs(args, {
    string: ["duration", "concurrency", "arch", "max-input-length", "saturate", "threads", "backends"],
    default: {
      duration: "5",
      concurrency: "1,8,32",
      arch: "bert-mini",
      "max-input-length": "128",
      saturate: "256",
    },
  });
  const seconds = Number(flags.duration);
  const concurrencies = String(flags.concurrency).split(",").map(Number).filter((n) => n > 0);
  const arch = String(flags.arch);
  const maxLength = Number(flags["max-input-length"]);
  const threads = flags.threads ? Number(flags.threads) : undefined;
  const { dir, vocabText } = await publishModel(arch);
  const storeDir = join(dir, "store");
  const common = { bench: "inference", model: `${arch}-classifier(random)`, max_input_length: maxLength };
  const serverFlags = [
    "--max-input-length",
    String(maxLength),
    ...(threads ? ["--threads", String(threads)] : []),
  ];
  try {
    const hasOnnx = await new LocalStore(storeDir).exists(`models/${MODEL}/20260101T000000Z/model.onnx`);
    const backends = flags.backends
      ? String(flags.backends).split(",")
      : hasOnnx
      ? ["native", "onnx"]
      : ["native"];
    for (const backend of backends) {
      const server = await startServer(storeDir, [
        ...serverFlags,
        "--backend",
        backend,
        "--max-concurrent-requests",
        "1024",
      ]);
      // One pool for all runs, closed just before the server stops: a GOAWAY can abort the Deno process that
      // receives it inside nghttp2 (denoland/deno#36788, deno 2.9.6), the server mid-run when clients come and
      // go, or this process when the stopping server says goodbye first.
      const pool = grpcPool(server.grpc);
      try {
        await driveHttp(server.http, 4, 1); // warm-up: JIT, allocator, first batches
        for (const concurrency of concurrencies) {
          for (const protocol of ["http", "grpc"] as const) {
            const line = { ...common, impl: "bertforge", backend, protocol, concurrency };
            if (server.exited) {
              console.log(
                JSON.stringify({ ...line, skipped: true, reason: `the server exited (${server.exited})` }),
              );
              continue;
            }
            let result;
            const before = await batchCounters(server.http);
            try {
              result = protocol === "http"
                ? await driveHttp(server.http, concurrency, seconds)
                : await driveGrpc(pool, concurrency, seconds);
            } catch (error) {
              console.log(JSON.stringify({ ...line, failed: true, reason: (error as Error).message }));
              continue;
            }
            const after = await batchCounters(server.http);
            console.log(JSON.stringify({
              ...common,
              impl: "bertforge",
              backend,
              protocol,
              concurrency,
              ...result,
              mean_batch: round(
                (after.inputs - before.inputs) / Math.max(1, after.passes - before.passes),
                1,
              ),
              server_rss_mb: rssMb(server.process.pid),
            }));
          }
        }
      } finally {
        for (const c of pool) c.close();
        await server.stop();
      }
    }

    // Far above the admission bound: the answer must be 429, not timeouts, and memory must stay flat.
    const saturate = Number(flags.saturate);
    if (saturate > 0) {
      const limit = Math.max(8, Math.floor(saturate / 4));
      const server = await startServer(storeDir, [
        ...serverFlags,
        "--max-concurrent-requests",
        String(limit),
      ]);
      try {
        await driveHttp(server.http, 4, 1);
        const before = rssMb(server.process.pid);
        const result = await driveHttp(server.http, saturate, seconds);
        console.log(JSON.stringify({
          ...common,
          impl: "bertforge",
          backend: "native",
          protocol: "http",
          scenario: "saturation",
          concurrency: saturate,
          max_concurrent_requests: limit,
          ...result,
          server_rss_mb_before: before,
          server_rss_mb_after: rssMb(server.process.pid),
        }));
      } finally {
        await server.stop();
      }
    }

    for (const batch of concurrencies) {
      for (const batching of ["mixed", "one-length"] as const) {
        const native = await inProcess(
          "native",
          batching,
          storeDir,
          vocabText,
          arch,
          maxLength,
          batch,
          seconds,
          threads,
        );
        console.log(
          JSON.stringify({
            ...common,
            impl: "engine-inprocess",
            backend: "native",
            batching,
            batch,
            ...native,
          }),
        );
      }
    }
    if (!hasOnnx) {
      let ort = "loads";
      try {
        await loadOrt();
      } catch (error) {
        ort = `does not load: ${(error as Error).message}`;
      }
      console.log(JSON.stringify({
        ...common,
        impl: "onnxruntime",
        skipped: true,
        reason:
          `no ONNX export (services/shared/model/onnx/export.ts is not in this checkout); onnxruntime-node ${ort}`,
      }));
    } else {
      for (const batch of concurrencies) {
        for (const batching of ["mixed", "one-length"] as const) {
          const ort = await inProcess(
            "onnx",
            batching,
            storeDir,
            vocabText,
            arch,
            maxLength,
            batch,
            seconds,
            threads,
          );
          console.log(
            JSON.stringify({
              ...common,
              impl: "onnxruntime",
              backend: "onnx-inprocess",
              batching,
              batch,
              ...ort,
            }),
          );
        }
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main(Deno.args);

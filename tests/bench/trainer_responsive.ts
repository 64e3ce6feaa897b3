/**
 * `deno task bench trainer_responsive [--arch bert-mini] [--batch 64] [--seq-len 128] [--probes 100] [--threads N]`
 *
 * A trainer service on loopback (port 0, its own store folder) runs a real pretraining job while this bench
 * times, one after another, gRPC health checks and ListJobs calls against it, then cancels the job and times
 * the cancel. The job trains in a worker thread, so the service's thread should answer in milliseconds and a
 * cancel should land within one step (plus its checkpoint write).
 *
 * Prints `{"bench":"trainer_responsive","impl":"bertforge","p99_ms":..,"cancel_ms":..,...}`: p99_ms is over
 * health and ListJobs together; step_ms is the job's own pace, measured from its step events when it logs one.
 */
import { parseArgs } from "@std/cli";
import { loadSettings } from "../../services/shared/config/mod.ts";
import { client, healthClient } from "../../services/shared/rpc/mod.ts";
import { LocalStore } from "../../services/shared/store/local.ts";
import { start } from "../../services/trainer/main.ts";
import { writeTinyShards } from "../../services/trainer/testing.ts";

function quantile(xs: number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
}

async function timed(call: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await call();
  return performance.now() - started;
}

export async function main(args: string[]): Promise<void> {
  const flags = parseArgs(args, {
    string: ["arch", "batch", "seq-len", "probes", "threads", "interval-ms"],
    default: { arch: "bert-mini", batch: "64", "seq-len": "128", probes: "100", "interval-ms": "20" },
  });
  const B = Number(flags.batch), T = Number(flags["seq-len"]), probes = Number(flags.probes);
  const dir = await Deno.makeTempDir({ prefix: "bf-bench-responsive-" });
  const store = new LocalStore(dir);
  await writeTinyShards(store, "bench", { count: Math.max(4 * B, 256), T, maxShardBytes: 1 << 20 });
  const settings = loadSettings("trainer", {
    args: [
      "--port",
      "0",
      "--store",
      dir,
      "--log-level",
      "warn",
      ...(flags.threads ? ["--threads", flags.threads] : []),
    ],
    env: () => undefined,
  });
  const server = await start(settings);
  const rpc = client("TrainerService", server.address, { defaultDeadlineMs: 600_000 });
  const health = healthClient(server.address);
  try {
    const { job } = await rpc.unary("SubmitJob", {
      name: "responsive",
      pretrain: {
        shards: "bench",
        arch: flags.arch,
        steps: 100_000,
        batch_size: B,
        checkpoint_every: 100_000,
        seed: 1,
      },
    });
    // Probe only once steps run: the job logs its plan right before its first step.
    const watching = new AbortController();
    let stepMs = NaN;
    const stepTimes: number[] = [];
    const started = Promise.withResolvers<void>();
    const watch = (async () => {
      try {
        for await (
          const { event } of rpc.serverStream("WatchJob", { job_id: job.id }, { signal: watching.signal })
        ) {
          if (String(event.message ?? "").startsWith("pretraining")) started.resolve();
          if (event.type === "JOB_EVENT_TYPE_PROGRESS") stepTimes.push(performance.now());
        }
      } catch { /* aborted below */ }
    })();
    await started.promise;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const latencies: number[] = [];
    for (let i = 0; i < probes; i++) {
      latencies.push(
        await timed(() => health.unary("Check", { service: "" }, { retry: { maxAttempts: 1 } })),
      );
      latencies.push(await timed(() => rpc.unary("ListJobs", {})));
      await new Promise((resolve) => setTimeout(resolve, Number(flags["interval-ms"])));
    }
    const cancelMs = await timed(() => rpc.unary("CancelJob", { job_id: job.id }));
    watching.abort();
    await watch;
    if (stepTimes.length >= 2) stepMs = (stepTimes.at(-1)! - stepTimes[0]!) / (stepTimes.length - 1);
    const { job: ended } = await rpc.unary("GetJob", { job_id: job.id });
    const round = (x: number) => Math.round(x * 10) / 10;
    console.log(JSON.stringify({
      bench: "trainer_responsive",
      impl: "bertforge",
      arch: flags.arch,
      batch: B,
      seq_len: T,
      calls: latencies.length,
      p50_ms: round(quantile(latencies, 0.5)),
      p99_ms: round(quantile(latencies, 0.99)),
      max_ms: round(Math.max(...latencies)),
      cancel_ms: round(cancelMs),
      ...(Number.isFinite(stepMs) ? { log_interval_ms: round(stepMs) } : {}),
      stopped_at_step: Number(ended.progress?.step ?? 0),
      state: ended.state,
    }));
  } finally {
    health.close();
    rpc.close();
    await server.shutdown("bench done");
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main(Deno.args);

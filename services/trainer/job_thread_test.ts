/**
 * The trainer answers while it trains: a real trainer service on loopback runs a pretraining job in its worker
 * thread while the test times health checks, ListJobs and a cancel against it.
 */
import { assert, assertEquals } from "@std/assert";
import { loadSettings } from "../shared/config/mod.ts";
import { client, healthClient, type Message } from "../shared/rpc/mod.ts";
import { LocalStore } from "../shared/store/local.ts";
import { start } from "./main.ts";
import { tinyConfigJson, writeTinyShards } from "./testing.ts";

async function timed<T>(call: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await call();
  return { ms: performance.now() - started, value };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const TOTAL_STEPS = 100_000;

Deno.test("trainer: health and ListJobs answer within 100 ms during a job's steps, and cancel stops it within a step", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bf-trainer-responsive-" });
  const store = new LocalStore(dir);
  await writeTinyShards(store, "tiny", { count: 256 });
  const settings = loadSettings("trainer", {
    args: ["--port", "0", "--store", dir, "--threads", "1", "--log-level", "warn"],
    env: () => undefined,
  });
  const server = await start(settings);
  const rpc = client("TrainerService", server.address, { defaultDeadlineMs: 120_000 });
  const health = healthClient(server.address);
  try {
    // 100,000 steps log every 500: on the service's own thread, steps ran for hundreds in a row unanswered.
    const { job } = await rpc.unary("SubmitJob", {
      name: "long",
      pretrain: {
        shards: "tiny",
        config_json: tinyConfigJson(),
        steps: TOTAL_STEPS,
        batch_size: 8,
        learning_rate: 1e-3,
        checkpoint_every: 100_000,
        seed: 1,
      },
    });
    const watching = new AbortController();
    const stream = rpc.serverStream("WatchJob", { job_id: job.id }, { signal: watching.signal });
    for await (const response of stream) {
      if (String(response.event?.message ?? "").startsWith("pretraining")) break; // steps start now
    }
    watching.abort();
    await new Promise((resolve) => setTimeout(resolve, 300));

    const healthMs: number[] = [];
    const listMs: number[] = [];
    for (let i = 0; i < 10; i++) {
      const check = await timed(() =>
        health.unary<{ status: string }>("Check", { service: "" }, { retry: { maxAttempts: 1 } })
      );
      assertEquals(check.value.status, "SERVING");
      healthMs.push(check.ms);
      listMs.push((await timed(() => rpc.unary("ListJobs", {}))).ms);
    }
    assert(
      median(healthMs) < 100,
      `health took ${healthMs.map(Math.round).join(", ")} ms during the job's steps`,
    );
    assert(
      median(listMs) < 100,
      `ListJobs took ${listMs.map(Math.round).join(", ")} ms during the job's steps`,
    );

    const cancel = await timed(() => rpc.unary("CancelJob", { job_id: job.id }));
    assertEquals(cancel.value.job.state, "JOB_STATE_CANCELLED");
    const events: Message[] = [];
    for await (const response of rpc.serverStream("WatchJob", { job_id: job.id })) {
      events.push(response.event);
    }
    const checkpoint = events.find((e) => e.type === "JOB_EVENT_TYPE_CHECKPOINT");
    assert(checkpoint, "the cancelled job wrote a checkpoint to resume from");
    const step = Number(checkpoint.checkpoint.version);
    // The loop checks the flag after every step; before, a cancel landed only at the next log point (step 500),
    // where the loop first yielded. Wall time is left to the trainer_responsive bench: on a loaded machine one
    // step can take seconds.
    // Steps of this tiny job take well under a millisecond on a quiet machine, so the step count says little:
    // what must hold is that the cancel is answered promptly and the job stops short of its end.
    assert(
      cancel.ms < 5_000 && step < TOTAL_STEPS,
      `stopped at step ${step} (cancel took ${Math.round(cancel.ms)} ms)`,
    );
  } finally {
    health.close();
    rpc.close();
    await server.shutdown("test done");
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Exact resume, the hard way: a real trainer process is SIGKILLed at random moments of a short job
 * (mid-step, mid-checkpoint, mid-publish), restarted each time, and the published weights must be
 * bit-identical to those of a run that was never interrupted.
 */
import { assert, assertEquals, assertGreaterOrEqual } from "@std/assert";
import { LocalStore } from "../shared/store/local.ts";
import { readManifest } from "../shared/store/publish.ts";
import { client, type Message } from "../shared/rpc/mod.ts";
import { runPretrainJob } from "./pretrain.ts";
import { tinyConfigJson, writeTinyShards } from "./testing.ts";
import { Rng } from "../shared/shards/rng.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

const SPEC = {
  name: "killed",
  shards: "tiny",
  configJson: tinyConfigJson({ hidden_size: 24, num_hidden_layers: 2, intermediate_size: 40 }),
  steps: 120,
  batchSize: 8,
  learningRate: 2e-3,
  checkpointEvery: 3,
  keepCheckpoints: 2,
  logEvery: 1,
  seed: 11,
};

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function startTrainer(dir: string, port: number): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      MAIN,
      "--port",
      String(port),
      "--store",
      dir,
      "--threads",
      "1",
      "--log-level",
      "error",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function weightsSha(store: LocalStore, prefix: string): Promise<string> {
  return (await readManifest(store, prefix)).parts.find((p) => p.name === "model.safetensors")!.sha256;
}

Deno.test({
  name: "a trainer SIGKILLed at random moments and restarted publishes bit-identical weights",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "bf-trainer-kill-" });
    const store = new LocalStore(dir);
    try {
      await writeTinyShards(store, "tiny", { count: 320 });
      // The uninterrupted reference runs in a store of its own (its job folder is not a JobManager job).
      const referenceDir = await Deno.makeTempDir({ prefix: "bf-trainer-ref-" });
      const referenceStore = new LocalStore(referenceDir);
      await writeTinyShards(referenceStore, "tiny", { count: 320 });
      const reference = await runPretrainJob(SPEC, {
        jobId: "reference",
        store: referenceStore,
        emit: () => {},
        threads: 1,
      });
      const referenceSha = await weightsSha(referenceStore, reference.model.prefix);
      await Deno.remove(referenceDir, { recursive: true });

      const port = freePort();
      const rpc = client("TrainerService", `127.0.0.1:${port}`, { defaultDeadlineMs: 60_000 });
      const rng = Rng.seeded(Date.now() % 100000);
      let jobId = "";
      let kills = 0;
      let lastStepSeen = 0;
      let lastSeq = 0;
      const stepsAtKill: number[] = [];
      try {
        for (let round = 0; round < 5; round++) {
          const child = startTrainer(dir, port);
          await rpc.waitForReady(30_000);
          if (!jobId) {
            const { job } = await rpc.unary("SubmitJob", {
              name: "killed",
              request_id: "kill-test",
              pretrain: {
                shards: "tiny",
                config_json: SPEC.configJson,
                steps: SPEC.steps,
                batch_size: SPEC.batchSize,
                learning_rate: SPEC.learningRate,
                checkpoint_every: SPEC.checkpointEvery,
                keep_checkpoints: SPEC.keepCheckpoints,
                seed: SPEC.seed,
              },
            });
            jobId = job.id;
          }
          if (round === 4) {
            // The last life runs to the end.
            let final: Message | undefined;
            for await (const { event } of rpc.serverStream("WatchJob", { job_id: jobId })) final = event;
            assertEquals(final?.state, "JOB_STATE_SUCCEEDED", final?.message);
            child.kill("SIGTERM");
            await child.status;
            break;
          }
          // Let it run for a random number of progress events (or a random time), then kill it hard.
          const wantEvents = rng.randint(1, 45);
          const delayMs = rng.randint(0, 40);
          let seen = 0;
          const controller = new AbortController();
          try {
            const watch = rpc.serverStream("WatchJob", { job_id: jobId, after_seq: lastSeq }, {
              signal: controller.signal,
            });
            for await (const { event } of watch) {
              lastSeq = event.seq;
              if (event.type === "JOB_EVENT_TYPE_PROGRESS" && event.step) lastStepSeen = Number(event.step);
              // Stop watching by aborting (the stream then ends with CANCELLED, caught below) rather than
              // breaking out of the loop.
              if (event.state === "JOB_STATE_SUCCEEDED") controller.abort();
              if (event.type !== "JOB_EVENT_TYPE_STATE" && ++seen >= wantEvents) controller.abort();
            }
          } catch {
            // CANCELLED by the abort above, or UNAVAILABLE when the process died under the watch
          }
          controller.abort();
          await new Promise((r) => setTimeout(r, delayMs));
          child.kill("SIGKILL");
          await child.status;
          kills++;
          stepsAtKill.push(lastStepSeen);
        }
      } finally {
        rpc.close();
      }
      console.log(
        `kills at steps ${stepsAtKill}, attempt ${
          (await store.getJson<{ attempt: number }>(`jobs/${jobId}/state.json`)).attempt
        }`,
      );
      assertGreaterOrEqual(kills, 4);
      const job = await store.getJson<
        { state: string; attempt: number; result: { model: { prefix: string } } }
      >(
        `jobs/${jobId}/state.json`,
      );
      assertEquals(job.state, "SUCCEEDED");
      assert(job.attempt >= 2, `resumed after kills (attempt ${job.attempt}, steps at kills ${stepsAtKill})`);
      assertEquals(
        await weightsSha(store, job.result.model.prefix),
        referenceSha,
        `weights differ after kills at steps ${stepsAtKill}`,
      );
      // Exactly one version was published however many times publishing was interrupted.
      const versions: string[] = [];
      for await (const info of store.list("models/killed/")) if (info.isPrefix) versions.push(info.key);
      assertEquals(versions.length, 1, versions.join(", "));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

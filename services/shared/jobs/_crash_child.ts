/**
 * Test helper for jobs_test.ts: a process that runs one resumable job and gets SIGKILLed mid-job.
 * Usage: `deno run -A _crash_child.ts STORE_DIR`; prints the job id once the job is running.
 */
import { LocalStore } from "../store/local.ts";
import { JobManager } from "./jobs.ts";

const manager = new JobManager(new LocalStore(Deno.args[0]), { progressIntervalMs: 0 });
manager.register<{ steps: number }, unknown>("counting", {
  onInterrupted: "resume",
  run: async (ctx) => {
    for (let step = 1; step <= ctx.spec.steps; step++) {
      await ctx.store.putJson(`${ctx.prefix}checkpoint.json`, { step });
      await ctx.progress(step, ctx.spec.steps);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return { finishedBy: "child" };
  },
});
const id = await manager.submit("counting", { steps: 100_000 });
console.log(id);

import assert from "node:assert/strict";
import { FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { LocalStore } from "../store/local.ts";
import { startS3rver } from "../store/testing.ts";
import { type JobEvent, JobManager, type JobRecord } from "./jobs.ts";

async function withStore(fn: (dir: string, store: LocalStore) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "bertforge-jobs-" });
  try {
    await fn(dir, new LocalStore(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function collect(events: AsyncIterable<JobEvent>): Promise<JobEvent[]> {
  const out: JobEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

function gate(): { promise: Promise<void>; open: () => void } {
  const { promise, resolve } = Promise.withResolvers<void>();
  return { promise, open: () => resolve() };
}

const states = (events: JobEvent[]) => events.filter((e) => e.type === "state").map((e) => e.state);

Deno.test("JobManager.submit returns at once; watch replays past events then follows live ones", async () => {
  await withStore(async (_dir, store) => {
    const manager = new JobManager(store, { progressIntervalMs: 0 });
    const release = gate();
    manager.register<{ n: number }, { sum: number }>("adder", {
      run: async (ctx) => {
        await ctx.progress(1, ctx.spec.n, "first half");
        await release.promise;
        await ctx.emit({ type: "log", message: "second half", data: { half: 2 } });
        await ctx.progress(2, ctx.spec.n);
        return { sum: 42 };
      },
    });
    const id = await manager.submit("adder", { n: 2 });
    assert.match(id, /^\d{17}-adder-[0-9a-f]{6}$/);
    assert.deepEqual(await manager.getSpec(id), { n: 2 });

    // A watcher attached mid-job sees the past events first, then the live ones, then stops.
    const early = await (async () => {
      const events: JobEvent[] = [];
      for await (const event of manager.watch(id)) {
        events.push(event);
        if (event.message === "first half") release.open();
      }
      return events;
    })();
    assert.deepEqual(early.map((e) => e.seq), early.map((_, i) => i + 1), "seqs are 1, 2, 3... with no gap");
    assert.deepEqual(states(early), ["QUEUED", "RUNNING", "SUCCEEDED"]);
    assert.deepEqual(early.find((e) => e.type === "log")?.data, { half: 2 });
    assert.deepEqual(early.filter((e) => e.type === "progress").map((e) => e.progress), [
      { done: 1, total: 2 },
      { done: 2, total: 2 },
    ]);
    for (let i = 1; i < early.length; i++) {
      assert.ok(early[i].time >= early[i - 1].time, "times are monotonic");
    }

    // A watcher after the end gets the same replay; afterSeq skips what a reconnecting one saw.
    assert.deepEqual(await collect(manager.watch(id)), early);
    assert.deepEqual(await collect(manager.watch(id, { afterSeq: 3 })), early.slice(3));

    const record = await manager.get(id);
    assert.equal(record.state, "SUCCEEDED");
    assert.deepEqual(record.result, { sum: 42 });
    assert.equal(record.lastSeq, early.length);
    assert.ok(record.startedAt && record.finishedAt);
  });
});

Deno.test("JobManager runs one job at a time per concurrency slot, the rest queued in order", async () => {
  await withStore(async (_dir, store) => {
    const manager = new JobManager(store, { concurrency: 1 });
    const started: number[] = [];
    const release = gate();
    manager.register<{ i: number }, number>("slot", {
      run: async (ctx) => {
        started.push(ctx.spec.i);
        await release.promise;
        return ctx.spec.i;
      },
    });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(await manager.submit("slot", { i }));
    assert.deepEqual([...ids].sort(), ids, "ids sort by submission time");
    await new Promise((resolve) => setTimeout(resolve, 50));
    const { jobs } = await manager.list();
    assert.deepEqual(jobs.map((j) => j.id), [...ids].reverse(), "list is newest first");
    assert.deepEqual(jobs.map((j) => j.state), ["QUEUED", "QUEUED", "QUEUED", "RUNNING"]);
    assert.deepEqual((await manager.list({ state: "QUEUED" })).jobs.length, 3);
    release.open();
    await manager.idle();
    assert.deepEqual(started, [0, 1, 2, 3]);

    const page1 = await manager.list({ pageSize: 3 });
    assert.equal(page1.jobs.length, 3);
    assert.equal(page1.nextPageToken, ids[1]);
    const page2 = await manager.list({ pageSize: 3, pageToken: page1.nextPageToken });
    assert.deepEqual(page2.jobs.map((j) => j.id), [ids[0]]);
    assert.equal(page2.nextPageToken, "");
    assert.equal((await manager.list({ kind: "other" })).jobs.length, 0);
    await assert.rejects(
      manager.list({ pageToken: "abc" }),
      (e: Error) => e instanceof InvalidArgument && e.message.startsWith("page.page_token must look like"),
    );
  });
});

Deno.test("JobManager.cancel stops running and queued jobs; a finished job cannot be cancelled", async () => {
  await withStore(async (_dir, store) => {
    const manager = new JobManager(store, { concurrency: 1 });
    const running = gate();
    manager.register("loop", {
      run: async (ctx) => {
        running.open();
        while (!ctx.signal.aborted) await new Promise((resolve) => setTimeout(resolve, 5));
        ctx.signal.throwIfAborted();
      },
    });
    const first = await manager.submit("loop", {});
    const second = await manager.submit("loop", {});
    await running.promise;
    const watching = collect(manager.watch(first));

    const queued = await manager.cancel(second);
    assert.equal(queued.state, "CANCELLED");
    const cancelled = await manager.cancel(first);
    assert.equal(cancelled.state, "CANCELLED");
    assert.equal(cancelled.error?.code, "CANCELLED");
    assert.deepEqual(states(await watching), ["QUEUED", "RUNNING", "CANCELLED"]);
    await assert.rejects(() => manager.cancel(first), FailedPrecondition);
    await assert.rejects(() => manager.cancel(first), /already ended \(CANCELLED\)/);
  });
});

Deno.test("JobManager records a runner's error as FAILED with its code; bad input is refused", async () => {
  await withStore(async (_dir, store) => {
    const manager = new JobManager(store);
    manager.register<{ size: number }, void>("strict", {
      validate: (spec) => {
        const size = (spec as { size?: unknown })?.size;
        if (typeof size !== "number") throw new InvalidArgument(`size must be a number: got ${size}`);
        return { size };
      },
      run: () => Promise.reject(new NotFound("corpus corpora/x not found")),
    });
    await assert.rejects(() => manager.submit("strict", { size: "big" }), /size must be a number/);
    await assert.rejects(() => manager.submit("nope", {}), InvalidArgument);
    const id = await manager.submit("strict", { size: 3 });
    const events = await collect(manager.watch(id));
    assert.deepEqual(states(events), ["QUEUED", "RUNNING", "FAILED"]);
    const record = await manager.get(id);
    assert.deepEqual(record.error, { code: "NOT_FOUND", message: "corpus corpora/x not found" });
    await assert.rejects(() => manager.get("20990101000000000-strict-abcdef"), NotFound);
    await assert.rejects(() => manager.get("../etc"), InvalidArgument);
    assert.throws(() => manager.register("Bad Kind", { run: () => Promise.resolve() }), InvalidArgument);
  });
});

Deno.test("JobManager.recover resumes or fails what a dead manager left, and requeues its queue", async () => {
  await withStore(async (dir) => {
    // The first manager "dies": its runners hang forever and it is never closed.
    const dead = new JobManager(new LocalStore(dir), { concurrency: 2, progressIntervalMs: 0 });
    const hang = new Promise<never>(() => {});
    const bothRunning = { count: 0, ...gate() };
    for (const kind of ["resumable", "fragile"]) {
      dead.register(kind, {
        run: async (ctx) => {
          await ctx.progress(7, 10, "before the crash");
          if (++bothRunning.count === 2) bothRunning.open();
          return await hang;
        },
      });
    }
    const resumable = await dead.submit("resumable", { a: 1 });
    const fragile = await dead.submit("fragile", {});
    const waiting = await dead.submit("resumable", { a: 2 });
    await bothRunning.promise;

    const fresh = new JobManager(new LocalStore(dir), { progressIntervalMs: 0 });
    const seen: { id: string; resumed: boolean; attempt: number; last?: number }[] = [];
    fresh.register<{ a: number }, string>("resumable", {
      onInterrupted: "resume",
      run: (ctx) => {
        seen.push({
          id: ctx.jobId,
          resumed: ctx.resumeInfo.resumed,
          attempt: ctx.resumeInfo.attempt,
          last: ctx.resumeInfo.lastEvent?.progress?.done,
        });
        return Promise.resolve(`done ${ctx.spec.a}`);
      },
    });
    fresh.register("fragile", { onInterrupted: "fail", run: () => Promise.resolve() });
    const outcome = await fresh.recover();
    assert.deepEqual(outcome, { requeued: [waiting], resumed: [resumable], failed: [fragile] });
    await fresh.idle();

    assert.deepEqual(seen, [
      { id: resumable, resumed: true, attempt: 2, last: 7 },
      { id: waiting, resumed: false, attempt: 1, last: undefined },
    ]);
    const resumedRecord: JobRecord = await fresh.get(resumable);
    assert.equal(resumedRecord.state, "SUCCEEDED");
    assert.equal(resumedRecord.result, "done 1");
    assert.equal(resumedRecord.owner, fresh.instanceId);
    const history = await collect(fresh.watch(resumable));
    assert.deepEqual(states(history), ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "SUCCEEDED"]);
    assert.match(history[3].message!, /resuming \(attempt 2 of 3\)/);

    const failed = await fresh.get(fragile);
    assert.equal(failed.state, "FAILED");
    assert.match(
      failed.error!.message,
      /exited while the job was RUNNING and jobs of kind fragile are not resumable/,
    );
    assert.equal((await fresh.get(waiting)).state, "SUCCEEDED");

    // Nothing is left to recover, and a manager for other kinds leaves these jobs alone.
    assert.deepEqual(await fresh.recover(), { requeued: [], resumed: [], failed: [] });
  });
});

Deno.test("a job whose process is SIGKILLed mid-run is resumed by a new manager", async () => {
  await withStore(async (dir, store) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./_crash_child.ts", import.meta.url).pathname, dir],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("child exited before printing the job id");
      text += value;
    }
    const id = text.trim();

    // Watch from another manager (polling the store) until the child has made some progress.
    const observer = new JobManager(store, { pollIntervalMs: 20 });
    for await (const event of observer.watch(id)) {
      if ((event.progress?.done ?? 0) >= 5) break;
    }
    child.kill("SIGKILL");
    assert.equal((await child.status).signal, "SIGKILL");
    await reader.cancel().catch(() => {});
    assert.equal((await observer.get(id)).state, "RUNNING", "the dead process left its job RUNNING");

    const successor = new JobManager(store, { progressIntervalMs: 0 });
    let resumedFrom = -1;
    successor.register<{ steps: number }, unknown>("counting", {
      onInterrupted: "resume",
      run: async (ctx) => {
        assert.ok(ctx.resumeInfo.resumed);
        resumedFrom = (await ctx.store.getJson<{ step: number }>(`${ctx.prefix}checkpoint.json`)).step;
        await ctx.progress(ctx.spec.steps, ctx.spec.steps, "fast-forwarded");
        return { finishedBy: "successor", resumedFrom };
      },
    });
    assert.deepEqual((await successor.recover()).resumed, [id]);
    const events = await collect(successor.watch(id));
    assert.deepEqual(states(events), ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "SUCCEEDED"]);
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
    assert.ok(resumedFrom >= 5, `resumed from checkpoint step ${resumedFrom}`);
    const record = await successor.get(id);
    assert.deepEqual(record.result, { finishedBy: "successor", resumedFrom });
    assert.equal(record.attempt, 2);
  });
});

Deno.test({
  name: "JobManager works the same over the S3 store (s3rver on loopback)",
  // minio keeps sockets alive between requests, which the sanitizers would report as leaks.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const s3 = await startS3rver();
    try {
      const manager = new JobManager(s3.store("jobs-test"), { progressIntervalMs: 0 });
      manager.register<{ n: number }, number>("square", {
        run: async (ctx) => {
          await ctx.progress(1, 1);
          return ctx.spec.n * ctx.spec.n;
        },
      });
      const id = await manager.submit("square", { n: 12 });
      const events = await collect(manager.watch(id));
      assert.deepEqual(states(events), ["QUEUED", "RUNNING", "SUCCEEDED"]);
      assert.equal((await manager.get(id)).result, 144);
      const { jobs } = await new JobManager(s3.store("jobs-test")).list();
      assert.deepEqual(jobs.map((j) => [j.id, j.state]), [[id, "SUCCEEDED"]]);
    } finally {
      await s3.stop();
    }
  },
});

Deno.test("JobManager.close leaves running jobs RUNNING for the next manager; resumes stop after maxAttempts", async () => {
  await withStore(async (dir) => {
    let attempts = 0;
    const crashy = (manager: JobManager) =>
      manager.register("crashy", {
        onInterrupted: "resume",
        maxAttempts: 2,
        run: async (ctx) => {
          attempts++;
          await ctx.emit({ type: "log", message: `attempt ${ctx.resumeInfo.attempt}` });
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
          ctx.signal.throwIfAborted();
        },
      });
    const first = crashy(new JobManager(new LocalStore(dir)));
    const id = await first.submit("crashy", {});
    for await (const event of first.watch(id)) if (event.type === "log") break;
    await first.close(); // a graceful shutdown: the job is not CANCELLED, it waits for recovery
    assert.equal((await first.get(id)).state, "RUNNING");
    await assert.rejects(() => first.submit("crashy", {}), /shut down/);

    const second = crashy(new JobManager(new LocalStore(dir)));
    assert.deepEqual((await second.recover()).resumed, [id]);
    for await (const event of second.watch(id)) if (event.message === "attempt 2") break;
    await second.close();

    const third = crashy(new JobManager(new LocalStore(dir)));
    assert.deepEqual((await third.recover()).failed, [id]);
    const record = await third.get(id);
    assert.equal(record.state, "FAILED");
    assert.match(record.error!.message, /interrupted 2 times \(maxAttempts 2\)/);
    assert.equal(attempts, 2);
  });
});

Deno.test("JobManager.watch: NotFound for unknown jobs, and a signal ends a watch early", async () => {
  await withStore(async (_dir, store) => {
    const manager = new JobManager(store, { pollIntervalMs: 10 });
    await assert.rejects(() => collect(manager.watch("20990101000000000-x-abcdef")), NotFound);
    const release = gate();
    manager.register("wait", { run: () => release.promise });
    const id = await manager.submit("wait", {});
    const controller = new AbortController();
    const seen: JobEvent[] = [];
    for await (const event of manager.watch(id, { signal: controller.signal })) {
      seen.push(event);
      if (event.state === "RUNNING") controller.abort();
    }
    assert.deepEqual(states(seen), ["QUEUED", "RUNNING"]);
    release.open();
    await manager.idle();
    assert.equal((await manager.get(id)).state, "SUCCEEDED");
  });
});

Deno.test("JobManager: an event whose write fails once is written again, with no gap in the seqs", async () => {
  await withStore(async (_dir, store) => {
    // One write of an event object fails once (the store blinked); everything else goes through.
    let failNext = false;
    const putJson = store.putJson.bind(store);
    store.putJson = (key: string, value: unknown) => {
      if (failNext && key.includes("/events/")) {
        failNext = false;
        return Promise.reject(new Error("store unavailable for a moment"));
      }
      return putJson(key, value);
    };
    const manager = new JobManager(store, { progressIntervalMs: 0, pollIntervalMs: 10 });
    manager.register("blink", {
      run: async (ctx) => {
        await ctx.emit({ type: "log", message: "before" });
        failNext = true;
        await ctx.emit({ type: "log", message: "retried" });
        assert.equal(failNext, false, "the write failed once");
        await ctx.emit({ type: "log", message: "after" });
        return {};
      },
    });
    const id = await manager.submit("blink", {});
    // Bounded, so a gap fails the test instead of hanging it.
    const events = await collect(manager.watch(id, { signal: AbortSignal.timeout(60_000) }));
    await manager.idle(); // the final state.json is written after the last event a watcher sees
    assert.deepEqual(
      events.map((e) => e.seq),
      events.map((_, i) => i + 1),
      "seqs are 1, 2, 3... with no gap",
    );
    assert.deepEqual(events.filter((e) => e.type === "log").map((e) => e.message), [
      "before",
      "retried",
      "after",
    ]);
    assert.equal(states(events).at(-1), "SUCCEEDED");
  });
});

Deno.test("JobManager.watch reads a half-written event again (stores that write in place), but not forever", async () => {
  await withStore(async (_dir, store) => {
    const getJson = store.getJson.bind(store);
    let garbled = 0;
    let garbleUpTo = 2;
    store.getJson = <T>(key: string): Promise<T> => {
      if (key.endsWith("/events/0000000002.json") && garbled < garbleUpTo) {
        garbled++;
        return Promise.reject(
          new FailedPrecondition(`object ${key} is not valid JSON: Unexpected end of JSON input`),
        );
      }
      return getJson<T>(key);
    };
    const manager = new JobManager(store, { progressIntervalMs: 0, pollIntervalMs: 5 });
    manager.register("quick", { run: () => Promise.resolve(1) });
    const id = await manager.submit("quick", {});
    await manager.idle();
    assert.deepEqual(states(await collect(manager.watch(id))), ["QUEUED", "RUNNING", "SUCCEEDED"]);
    assert.equal(garbled, 2);
    // An event that never becomes readable is an error, not an endless wait.
    garbled = 0;
    garbleUpTo = Infinity;
    await assert.rejects(() => collect(manager.watch(id)), FailedPrecondition);
  });
});

Deno.test("JobManager.recover fails a job that stopped its process twice at the same point, with the reason in the record", async () => {
  await withStore(async (dir) => {
    // Each "process" dies the same way: the job reaches progress 3, then its manager is never heard of again.
    const dying = () => {
      const manager = new JobManager(new LocalStore(dir), {
        progressIntervalMs: 0,
        resumeBackoff: { initialBackoffMs: 10, maxBackoffMs: 20 },
      });
      const reached = gate();
      manager.register("poison", {
        onInterrupted: "resume",
        maxAttempts: 100,
        run: async (ctx) => {
          await ctx.progress(3, 10);
          reached.open();
          return await new Promise<never>(() => {});
        },
      });
      return { manager, reached: reached.promise };
    };
    const first = dying();
    const id = await first.manager.submit("poison", {});
    await first.reached;
    const outcomes = [];
    for (let restart = 1; restart <= 3; restart++) {
      const next = dying();
      const outcome = await next.manager.recover();
      outcomes.push(outcome);
      if (outcome.failed.length) break;
      await next.reached;
    }
    // Attempt 2 got no further than attempt 1, nor attempt 3 than 2: the third start fails it (not the 100th).
    assert.deepEqual(outcomes.map((o) => [o.resumed.length, o.failed.length]), [[1, 0], [1, 0], [0, 1]]);
    const record = await new JobManager(new LocalStore(dir)).get(id);
    assert.equal(record.state, "FAILED");
    assert.equal(record.attempt, 3);
    assert.match(
      record.error!.message,
      /2 times in a row without getting past progress 3 \(maxStalledAttempts 2\)/,
    );
    const history = await collect(new JobManager(new LocalStore(dir)).watch(id));
    assert.ok(
      history.some((e) =>
        /resuming in \d+\.\ds \(no progress since the attempt before\)/.test(e.message ?? "")
      ),
    );
  });
});

/** The store's writes of one job's events and state fail with PermissionDenied while `failing` says so. */
function flakyJobWrites(store: LocalStore, failing: () => boolean): void {
  const putJson = store.putJson.bind(store);
  store.putJson = (key: string, value: unknown) => {
    if (failing() && key.startsWith("jobs/") && /\/(events\/|state\.json)/.test(key)) {
      return Promise.reject(new Deno.errors.PermissionDenied(`read-only file system: ${key}`));
    }
    return putJson(key, value);
  };
}

Deno.test("JobManager: a store read-only for a while during a job delays its events, the job succeeds", async () => {
  await withStore(async (_dir, store) => {
    let readOnlyUntil = 0;
    flakyJobWrites(store, () => Date.now() < readOnlyUntil);
    const manager = new JobManager(store, {
      progressIntervalMs: 0,
      writeRetry: { initialBackoffMs: 20, maxBackoffMs: 100, deadlineMs: 10_000 },
    });
    manager.register("steady", {
      run: async (ctx) => {
        for (let step = 1; step <= 6; step++) {
          if (step === 3) readOnlyUntil = Date.now() + 500;
          await ctx.progress(step, 6);
        }
        return { steps: 6 };
      },
    });
    const id = await manager.submit("steady", {});
    await manager.idle();
    const record = await manager.get(id);
    assert.equal(record.state, "SUCCEEDED", record.error?.message ?? "");
    const events = await collect(manager.watch(id));
    assert.deepEqual(events.filter((e) => e.type === "progress").map((e) => e.progress!.done), [
      1,
      2,
      3,
      4,
      5,
      6,
    ]);
  });
});

Deno.test("JobManager: a store that stays read-only fails the job cleanly, keeps its checkpoint, and the manager runs on", async () => {
  await withStore(async (_dir, store) => {
    let readOnly = false;
    flakyJobWrites(store, () => readOnly);
    const manager = new JobManager(store, {
      progressIntervalMs: 0,
      writeRetry: { initialBackoffMs: 10, maxBackoffMs: 50, deadlineMs: 300 },
    });
    manager.register("stuck", {
      run: async (ctx) => {
        await ctx.store.putJson(`${ctx.prefix}checkpoint.json`, { step: 1 });
        readOnly = true;
        // Not awaited, as runners log: its failure must not become an unhandled rejection.
        void ctx.emit({ type: "log", message: "fire and forget" });
        for (let step = 2; !ctx.signal.aborted; step++) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        ctx.signal.throwIfAborted();
      },
    });
    manager.register("after", { run: () => Promise.resolve("ran") });
    const stuck = await manager.submit("stuck", {});
    await manager.idle();
    const record = await manager.get(stuck);
    assert.equal(record.state, "FAILED");
    assert.equal(record.error!.code, "UNAVAILABLE");
    assert.match(
      record.error!.message,
      /could not store the event \d+ of job .* after \d+ tries .*read-only file system.*checkpoints are kept/,
    );
    assert.ok(await store.exists(`jobs/${stuck}/checkpoint.json`));
    readOnly = false;
    const next = await manager.submit("after", {});
    await manager.idle();
    assert.equal((await manager.get(next)).state, "SUCCEEDED");
  });
});

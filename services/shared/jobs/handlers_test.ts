import assert from "node:assert/strict";
import { FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { LocalStore } from "../store/local.ts";
import type { CallContext, Message } from "../rpc/serve.ts";
import { jobHandlers, type JobHandlersOptions } from "./handlers.ts";
import { JobManager } from "./jobs.ts";
import { jobEventMessage, jobMessage } from "./proto.ts";

async function withManager(fn: (manager: JobManager) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "bertforge-job-handlers-" });
  const manager = new JobManager(new LocalStore(dir), { progressIntervalMs: 0 });
  try {
    for (const kind of ["alpha", "beta"]) manager.register(kind, { run: () => Promise.resolve({}) });
    await fn(manager);
  } finally {
    await manager.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const ctx = { signal: new AbortController().signal } as CallContext;

const base = (manager: JobManager): JobHandlersOptions => ({
  manager,
  jobMessage: (record) => Promise.resolve(jobMessage(record, null, { unit: "" })),
  eventMessage: (id, event, state, startedAt) => jobEventMessage(id, event, state, { startedAt, unit: "" }),
  listKind: (requested) => requested || undefined,
});

async function finished(manager: JobManager, kind: string): Promise<string> {
  const id = await manager.submit(kind, {});
  for await (const _ of manager.watch(id)) { /* until it ends */ }
  return id;
}

Deno.test("jobHandlers: GetJob, ListJobs by kind and state, WatchJob from a seq", () =>
  withManager(async (manager) => {
    const a = await finished(manager, "alpha");
    const b = await finished(manager, "beta");
    const handlers = jobHandlers({ ...base(manager), listKeep: (r) => r.kind === "alpha" });
    assert.equal((await handlers.GetJob({ job_id: b }, ctx)).job.id, b);
    await assert.rejects(() => handlers.GetJob({ job_id: "20261125150512345-alpha-abcdef" }, ctx), NotFound);

    const ids = async (request: Message, h = handlers) =>
      (await h.ListJobs(request, ctx)).jobs.map((j: Message) => j.id);
    assert.deepEqual(await ids({}), [a], "listKeep drops the other kind");
    assert.deepEqual(await ids({ filter: { states: ["JOB_STATE_RUNNING"] } }), []);
    assert.deepEqual(await ids({ filter: { states: ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"] } }), [a]);
    const onlyBeta = jobHandlers({ ...base(manager), listKind: () => "beta" });
    assert.deepEqual(await ids({ filter: { kind: "alpha" } }, onlyBeta), [b], "listKind decides the kind");
    assert.deepEqual(await ids({ filter: { kind: "alpha" } }, jobHandlers(base(manager))), [a]);
    await assert.rejects(() => handlers.ListJobs({ page: { page_size: -1 } }, ctx), InvalidArgument);

    const events: Message[] = [];
    for await (const response of handlers.WatchJob({ job_id: a, after_seq: "1" }, ctx)) {
      events.push(response.event);
    }
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 2));
    assert.equal(events.at(-1)?.state, "JOB_STATE_SUCCEEDED");
  }));

Deno.test("jobHandlers: CancelJob of a finished job is FAILED_PRECONDITION, with the service's message if it has one", () =>
  withManager(async (manager) => {
    const id = await finished(manager, "alpha");
    await assert.rejects(() => jobHandlers(base(manager)).CancelJob({ job_id: id }, ctx), FailedPrecondition);
    const own = jobHandlers({
      ...base(manager),
      finishedError: (record) => new FailedPrecondition(`job ${record.id} is over`),
    });
    await assert.rejects(
      () => own.CancelJob({ job_id: id }, ctx),
      (e: Error) => e.message === `job ${id} is over`,
    );
  }));

import { assertEquals } from "@std/assert";
import { jobEventMessage, jobMessage } from "./proto.ts";
import type { JobRecord } from "./jobs.ts";

Deno.test("jobEventMessage() maps type, state, elapsed time and progress with the service's default unit", () => {
  const message = jobEventMessage(
    "j1",
    {
      seq: 3,
      time: "2026-01-01T00:00:10.000Z",
      type: "checkpoint",
      message: "saved",
      progress: { done: 5, total: 10 },
    },
    "RUNNING",
    { startedAt: "2026-01-01T00:00:00.000Z", unit: "steps" },
  );
  assertEquals(message, {
    job_id: "j1",
    seq: 3,
    time: "2026-01-01T00:00:10.000Z",
    type: "JOB_EVENT_TYPE_CHECKPOINT",
    state: "JOB_STATE_RUNNING",
    message: "saved",
    elapsed_seconds: 10,
    metrics: {},
    step: "5",
    total: "10",
    unit: "steps",
  });
  assertEquals(
    jobEventMessage("j1", { seq: 1, time: "x", type: "weird" }, "QUEUED", { unit: "" }).type,
    "JOB_EVENT_TYPE_LOG",
  );
});

Deno.test("jobMessage() reports restarts, the error and the last progress of a record", () => {
  const record: JobRecord = {
    id: "j2",
    kind: "pretrain",
    state: "FAILED",
    createdAt: "c",
    attempt: 3,
    lastSeq: 9,
    progress: { done: 7, unit: "bytes" },
    error: { code: "NOT_FOUND", message: "no shards" },
  };
  const message = jobMessage(record, { name: "m" }, { unit: "steps" });
  assertEquals(message.restarts, 2);
  assertEquals(message.error, "NOT_FOUND: no shards");
  assertEquals(message.progress.unit, "bytes");
  assertEquals(message.progress.total, "0");
  assertEquals(JSON.parse(message.spec_json), { name: "m" });
});

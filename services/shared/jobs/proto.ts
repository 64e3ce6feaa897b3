/**
 * Stored jobs and their events as the `bertforge.v1` messages of common.proto (`Job`, `JobEvent`), once for
 * every service that runs jobs. Each service adds what only it knows: its outputs, its event payloads.
 */
import type { JobEvent, JobRecord } from "./jobs.ts";
import type { Message } from "../rpc/serve.ts";

/** Event types the jobs library and the runners write → common.proto JobEventType. */
export const JOB_EVENT_TYPES: Record<string, string> = {
  state: "JOB_EVENT_TYPE_STATE",
  progress: "JOB_EVENT_TYPE_PROGRESS",
  eval: "JOB_EVENT_TYPE_EVAL",
  checkpoint: "JOB_EVENT_TYPE_CHECKPOINT",
  log: "JOB_EVENT_TYPE_LOG",
  artifact: "JOB_EVENT_TYPE_ARTIFACT",
};

/** The fields every JobEvent message has; `unit` names what progress counts when the event does not say. */
export function jobEventMessage(
  jobId: string,
  event: JobEvent,
  state: string,
  options: { startedAt?: string; unit: string },
): Message {
  const { startedAt } = options;
  const out: Message = {
    job_id: jobId,
    seq: event.seq,
    time: event.time,
    type: JOB_EVENT_TYPES[event.type] ?? "JOB_EVENT_TYPE_LOG",
    state: `JOB_STATE_${event.state ?? state}`,
    message: event.message ?? "",
    elapsed_seconds: startedAt ? Math.max(0, (Date.parse(event.time) - Date.parse(startedAt)) / 1000) : 0,
    metrics: {},
  };
  if (event.progress) {
    out.step = String(event.progress.done);
    out.total = String(event.progress.total ?? 0);
    out.unit = event.progress.unit ?? options.unit;
  }
  return out;
}

/** The last progress of a job record as a JobEvent message, or null before any. */
export function jobProgressMessage(record: JobRecord, unit: string): Message | null {
  if (!record.progress) return null;
  return {
    job_id: record.id,
    type: "JOB_EVENT_TYPE_PROGRESS",
    state: `JOB_STATE_${record.state}`,
    step: String(record.progress.done),
    total: String(record.progress.total ?? 0),
    unit: record.progress.unit ?? unit,
    metrics: {},
  };
}

/** A job record and its spec as a Job message without outputs (the service fills `outputs`). */
export function jobMessage(
  record: JobRecord,
  spec: { name?: string } | null,
  options: { unit: string; progress?: Message | null },
): Message {
  return {
    id: record.id,
    kind: record.kind,
    name: spec?.name ?? "",
    state: `JOB_STATE_${record.state}`,
    spec_json: spec ? JSON.stringify(spec) : "",
    created_at: record.createdAt,
    started_at: record.startedAt ?? "",
    finished_at: record.finishedAt ?? "",
    progress: options.progress !== undefined ? options.progress : jobProgressMessage(record, options.unit),
    // A job waiting to resume says why its last attempt ended, so `jobs get` shows what the retries are about.
    error: record.error
      ? `${record.error.code}: ${record.error.message}`
      : record.retries?.lastError
      ? `retrying (attempt ${record.attempt}): ${record.retries.lastError}`
      : "",
    outputs: [],
    restarts: Math.max(0, record.attempt - 1),
  };
}

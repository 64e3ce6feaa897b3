/**
 * The job calls of common.proto (GetJob, ListJobs, CancelJob, WatchJob) as gRPC handlers, once for every
 * service that runs jobs on a JobManager. Each service passes what only it knows: how a job record and an
 * event become its messages (outputs, event payloads) and which kinds of job its ListJobs shows.
 */
import { type JobEvent, type JobManager, type JobRecord, TERMINAL_STATES } from "./jobs.ts";
import type { CallContext, Handlers, Message } from "../rpc/serve.ts";
import { pageSize } from "../rpc/paging.ts";

export interface JobHandlersOptions {
  manager: JobManager;
  /** A job record as this service's Job message (with its outputs). */
  jobMessage: (record: JobRecord) => Promise<Message>;
  /** A stored event as this service's JobEvent message (`state`: the job's state at that event). */
  eventMessage: (jobId: string, event: JobEvent, state: string, startedAt?: string) => Message;
  /** The kind ListJobs asks the manager for, given the request's `filter.kind` ("" when it names none). */
  listKind: (requested: string) => string | undefined;
  /** Which of the listed jobs ListJobs returns; every one when absent. */
  listKeep?: (record: JobRecord) => boolean;
  /** CancelJob of a job that already ended throws this instead of the manager's FailedPrecondition. */
  finishedError?: (record: JobRecord) => Error;
}

/** A number from a proto field that may come as a string (uint64) or be absent; 0 when it is not one. */
function num(value: unknown): number {
  return Number(value ?? 0) || 0;
}

/** WatchJob responses (`{ event }`) for a job: its stored events after `afterSeq`, then new ones. */
export async function* watchJob(
  manager: JobManager,
  jobId: string,
  afterSeq: number,
  eventMessage: JobHandlersOptions["eventMessage"],
  signal?: AbortSignal,
): AsyncGenerator<Message> {
  const record = await manager.get(jobId);
  let startedAt = record.startedAt;
  let state: string = record.state;
  for await (const event of manager.watch(jobId, { afterSeq, ...(signal ? { signal } : {}) })) {
    if (event.state) state = event.state;
    if (event.state === "RUNNING" && !startedAt) startedAt = event.time;
    yield { event: eventMessage(jobId, event, state, startedAt) };
  }
}

/** GetJob, ListJobs, CancelJob and WatchJob over `options.manager`. */
export function jobHandlers(options: JobHandlersOptions): Handlers {
  const { manager, jobMessage } = options;
  return {
    GetJob: async (request: Message) => ({ job: await jobMessage(await manager.get(request.job_id)) }),
    ListJobs: async (request: Message) => {
      const states = ((request.filter?.states ?? []) as string[]).map((s) => s.replace(/^JOB_STATE_/, ""));
      const kind = options.listKind(request.filter?.kind || "");
      const { jobs, nextPageToken } = await manager.list({
        pageSize: pageSize(request.page),
        ...(request.page?.page_token ? { pageToken: request.page.page_token } : {}),
        ...(states.length === 1 ? { state: states[0] as JobRecord["state"] } : {}),
        ...(kind ? { kind } : {}),
      });
      const selected = jobs.filter((j) =>
        (states.length <= 1 || states.includes(j.state)) && (!options.listKeep || options.listKeep(j))
      );
      return {
        jobs: await Promise.all(selected.map((j) => jobMessage(j))),
        page: { next_page_token: nextPageToken, total_size: 0 },
      };
    },
    CancelJob: async (request: Message) => {
      if (options.finishedError) {
        const record = await manager.get(request.job_id);
        if (TERMINAL_STATES.has(record.state)) throw options.finishedError(record);
      }
      return { job: await jobMessage(await manager.cancel(request.job_id)) };
    },
    WatchJob: (request: Message, ctx: CallContext) =>
      watchJob(manager, request.job_id, num(request.after_seq), options.eventMessage, ctx.signal),
  };
}

/**
 * The job machinery every long-running service reuses (TrainVocab, BuildPretraining, trainer jobs).
 *
 * A job lives in the store under `jobs/<id>/`:
 * - `spec.json`   what was asked, written once at submit;
 * - `state.json`  the {@linkcode JobRecord}: state, attempt, owner, progress, result or error;
 * - `events/<seq>.json` one object per event, `seq` counting 1, 2, 3... with no gaps, so a watcher
 *   replays them in order and follows new ones by probing the next key.
 *
 * States go QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED. A manager runs at most `concurrency`
 * jobs at a time; the others wait, visible in `list`, and start in submission order.
 *
 * Recovery: a process that dies leaves its jobs QUEUED or RUNNING in the store. `recover()` (call it
 * at start-up) takes every such job of the kinds this manager runs and, per kind, resumes it (the
 * runner is called again with `resumeInfo.resumed = true`) or fails it with a message saying why.
 * One manager per job kind per store is assumed: a second live manager for the same kinds would
 * take over the first one's jobs.
 *
 * @module
 */
import {
  BertforgeError,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  ResourceExhausted,
} from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { backoffMs, type RetryOptions } from "../rpc/client.ts";
import {
  activeTraceparent,
  captureTraceContext,
  type Context,
  ROOT_CONTEXT,
  spanContextFromTraceparent,
  SpanStatusCode,
  withSpan,
} from "../telemetry/otel.ts";

export type JobState = "QUEUED" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED";
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

export interface JobProgress {
  done: number;
  total?: number;
  unit?: string;
}

/** One event of a job. `seq` and `time` are set by the manager. */
export interface JobEvent {
  seq: number;
  /** ISO 8601 time the event was recorded. */
  time: string;
  /** `state` for transitions (and the last event of every job), else what the runner chose: `progress`, `log`, `metric`, ... */
  type: string;
  state?: JobState;
  message?: string;
  progress?: JobProgress;
  data?: Record<string, unknown>;
}

/** What the runner may emit: an event without the fields the manager sets. */
export type JobEventInput = Omit<JobEvent, "seq" | "time" | "state">;

export interface JobRecord {
  id: string;
  kind: string;
  state: JobState;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  /** 1 for the first run, +1 for each resume after a crash. */
  attempt: number;
  /** Id of the manager instance that runs (or last ran) the job. */
  owner?: string;
  progress?: JobProgress;
  /** What the runner returned, for SUCCEEDED jobs. */
  result?: unknown;
  /** Why the job failed or was cancelled. */
  error?: { code: string; message: string };
  /** seq of the last event written. */
  lastSeq: number;
  /**
   * How the job's resumes went (kinds that resume): `stalled` counts the interrupted attempts in a row that
   * got no further than the one before (the same way twice is a job that kills its process, not bad luck).
   */
  retries?: {
    stalled: number;
    /** Progress (`done`) when the current attempt started. */
    startedAt?: number;
    /** Why the last attempt ended. */
    lastError?: string;
  };
  /** W3C trace context of the submit call, when tracing was on: a resumed run links back to it. */
  traceparent?: string;
}

export interface ResumeInfo {
  /** True when a previous run of this job was interrupted by a process exit. */
  resumed: boolean;
  attempt: number;
  /** The last event the interrupted run recorded (e.g. its last progress), if any. */
  lastEvent?: JobEvent;
}

export interface JobContext<Spec = unknown> {
  jobId: string;
  kind: string;
  spec: Spec;
  store: ObjectStore;
  /** Where the job may keep its own objects (checkpoints...): `jobs/<id>/`. */
  prefix: string;
  /** Aborted when the job is cancelled or the manager shuts down; stop soon and throw. */
  signal: AbortSignal;
  resumeInfo: ResumeInfo;
  /** Records an event; resolves once it is durable. Events keep their order even when not awaited. */
  emit(event: JobEventInput): Promise<void>;
  /**
   * Records progress, at most one event per `progressIntervalMs` (the last call before the job
   * ends is always kept), so a tight loop may call it every step.
   */
  progress(done: number, total?: number, message?: string): Promise<void>;
}

export type JobRunner<Spec = unknown, Result = unknown> = (ctx: JobContext<Spec>) => Promise<Result>;

export interface JobKind<Spec = unknown, Result = unknown> {
  run: JobRunner<Spec, Result>;
  /** Checks and normalizes a spec at submit time; throw InvalidArgument naming the field. */
  validate?: (spec: unknown) => Spec;
  /**
   * What `recover()` does with a job of this kind found RUNNING after its process died: `resume`
   * calls `run` again with `resumeInfo.resumed`, `fail` marks it FAILED. QUEUED jobs never started,
   * so they are queued again either way. @default "fail"
   */
  onInterrupted?: "resume" | "fail";
  /** Resumes allowed before the job is failed instead (guards against a job that crashes its process). @default 3 */
  maxAttempts?: number;
  /**
   * Interrupted attempts in a row without progress past the previous one before the job is failed: a job that
   * stops its process at the same point twice would otherwise be retried up to `maxAttempts` times. @default 2
   */
  maxStalledAttempts?: number;
}

export interface JobManagerOptions {
  /** Jobs run at once; others queue. @default 1 */
  concurrency?: number;
  /** Longest queue (QUEUED jobs) accepted; beyond it submit throws ResourceExhausted. @default 1000 */
  maxQueued?: number;
  /** Minimum time between two progress events of one job. @default 250 */
  progressIntervalMs?: number;
  /** How often a watcher checks the store for events of a job run by another process. @default 500 */
  pollIntervalMs?: number;
  /**
   * Backoff before a resume that follows an attempt without progress (doubling per such attempt).
   * @default {initialBackoffMs: 1000, maxBackoffMs: 60000}
   */
  resumeBackoff?: RetryOptions;
  /**
   * Retries of one job-event or state write that failed (a store briefly read-only, full or unreachable),
   * with backoff, for at most `deadlineMs`; past it the job fails (its checkpoints stay) and the service runs on.
   * @default {initialBackoffMs: 100, maxBackoffMs: 5000, deadlineMs: 60000}
   */
  writeRetry?: RetryOptions & { deadlineMs?: number };
}

export interface ListJobsOptions {
  kind?: string;
  state?: JobState;
  /** @default 50 */
  pageSize?: number;
  /** `nextPageToken` of the previous page. */
  pageToken?: string;
}

export interface WatchOptions {
  /** Replay only events with a larger seq (a reconnecting watcher passes the last seq it saw). @default 0 */
  afterSeq?: number;
  /** Stops the watch (the iterator ends). */
  signal?: AbortSignal;
}

const JOBS_PREFIX = "jobs/";
const KIND_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;
const SHUTDOWN = Symbol("job manager shutdown");

interface RunningJob {
  controller: AbortController;
  done: Promise<void>;
}

/** Why a job was stopped when its events could no longer be stored (the abort reason, told apart from a cancel). */
class EventWriteFault extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("UNAVAILABLE", message, options);
  }
}

/** Reads of one event that may fail as half-written before a watch gives up on it. */
const MAX_UNREADABLE_READS = 20;

/**
 * Per-job writer that keeps event seqs contiguous and writes in order. A seq is taken only once its event is
 * stored (`stored()`): a failed write leaves no gap for watchers (who read seq + 1) to wait on forever; the next
 * event reuses the seq.
 */
class EventLog {
  #chain: Promise<unknown> = Promise.resolve();
  constructor(public seq: number) {}
  append<T>(write: (seq: number, stored: () => void) => Promise<T>): Promise<T> {
    const next = this.#chain.then(() => {
      const seq = this.seq + 1;
      return write(seq, () => {
        this.seq = seq;
      });
    });
    this.#chain = next.catch(() => {});
    return next;
  }
}

export class JobManager {
  readonly store: ObjectStore;
  /** This manager's id, recorded as `owner` of the jobs it runs. */
  readonly instanceId: string;
  readonly #kinds = new Map<string, JobKind<unknown, unknown>>();
  readonly #concurrency: number;
  readonly #maxQueued: number;
  readonly #progressIntervalMs: number;
  readonly #pollIntervalMs: number;
  readonly #resumeBackoff: Required<RetryOptions>;
  readonly #writeRetry: Required<RetryOptions> & { deadlineMs: number };
  /** Resumes waiting out their backoff, so close() can drop them. */
  readonly #delayed = new Set<ReturnType<typeof setTimeout>>();
  readonly #queue: string[] = [];
  readonly #running = new Map<string, RunningJob>();
  readonly #logs = new Map<string, EventLog>();
  readonly #records = new Map<string, JobRecord>();
  readonly #wakers = new Map<string, Set<() => void>>();
  /** The trace context of each queued job's submit call (only while tracing is on). */
  readonly #submitContexts = new Map<string, Context>();
  #lastIdTime = 0;
  #closed = false;

  constructor(store: ObjectStore, options: JobManagerOptions = {}) {
    this.store = store;
    this.#concurrency = positiveInteger("concurrency", options.concurrency ?? 1);
    this.#maxQueued = positiveInteger("maxQueued", options.maxQueued ?? 1000);
    this.#progressIntervalMs = options.progressIntervalMs ?? 250;
    this.#pollIntervalMs = options.pollIntervalMs ?? 500;
    this.#resumeBackoff = {
      maxAttempts: Infinity,
      initialBackoffMs: 1000,
      maxBackoffMs: 60_000,
      multiplier: 2,
      ...options.resumeBackoff,
    };
    this.#writeRetry = {
      maxAttempts: Infinity,
      initialBackoffMs: 100,
      maxBackoffMs: 5000,
      multiplier: 2,
      deadlineMs: 60_000,
      ...options.writeRetry,
    };
    this.instanceId = `${Deno.hostname?.() ?? "host"}-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  }

  /** Declares a job kind and how to run it. */
  register<Spec, Result>(kind: string, definition: JobKind<Spec, Result>): this {
    if (!KIND_PATTERN.test(kind)) {
      throw new InvalidArgument(`job kind must match ${KIND_PATTERN}: got ${JSON.stringify(kind)}`);
    }
    this.#kinds.set(kind, definition as JobKind<unknown, unknown>);
    return this;
  }

  /** Queues a job and returns its id once spec and state are stored; the job runs in the background. */
  async submit(kind: string, spec: unknown): Promise<string> {
    if (this.#closed) throw new FailedPrecondition("job manager is shut down");
    const definition = this.#kinds.get(kind);
    if (!definition) {
      throw new InvalidArgument(
        `kind ${JSON.stringify(kind)} is not a job kind here; known: ${[...this.#kinds.keys()].join(", ")}`,
      );
    }
    const checked = definition.validate ? definition.validate(spec) : spec;
    if (this.#queue.length >= this.#maxQueued) {
      throw new ResourceExhausted(`job queue is full (${this.#maxQueued} jobs waiting); retry later`);
    }
    const id = this.#newId(kind);
    const record: JobRecord = {
      id,
      kind,
      state: "QUEUED",
      createdAt: new Date().toISOString(),
      attempt: 1,
      owner: this.instanceId,
      lastSeq: 0,
    };
    await this.store.putJson(`${JOBS_PREFIX}${id}/spec.json`, checked ?? null);
    this.#records.set(id, record);
    this.#logs.set(id, new EventLog(0));
    const traceContext = captureTraceContext();
    if (traceContext) this.#submitContexts.set(id, traceContext);
    const traceparent = activeTraceparent();
    if (traceparent) record.traceparent = traceparent;
    await this.#transition(record, "QUEUED", "queued");
    this.#queue.push(id);
    this.#pump();
    return id;
  }

  /** The job's record; `NotFound` for an unknown id. */
  async get(id: string): Promise<JobRecord> {
    checkId(id);
    const local = this.#records.get(id);
    if (local) return structuredClone(local);
    try {
      return await this.store.getJson<JobRecord>(`${JOBS_PREFIX}${id}/state.json`);
    } catch (error) {
      if (error instanceof NotFound) throw new NotFound(`job ${id} not found`);
      throw error;
    }
  }

  /** The job's spec as stored at submit. */
  async getSpec<Spec = unknown>(id: string): Promise<Spec> {
    checkId(id);
    try {
      return await this.store.getJson<Spec>(`${JOBS_PREFIX}${id}/spec.json`);
    } catch (error) {
      if (error instanceof NotFound) throw new NotFound(`job ${id} not found`);
      throw error;
    }
  }

  /** Jobs, newest first, filtered by kind and state, a page at a time. */
  async list(options: ListJobsOptions = {}): Promise<{ jobs: JobRecord[]; nextPageToken: string }> {
    const pageSize = positiveInteger("pageSize", options.pageSize ?? 50);
    if (options.state && !["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"].includes(options.state)) {
      throw new InvalidArgument(
        `state must be one of QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED: got ${options.state}`,
      );
    }
    const ids: string[] = [];
    for await (const entry of this.store.list(JOBS_PREFIX)) {
      if (entry.isPrefix) ids.push(entry.key.slice(JOBS_PREFIX.length, -1));
    }
    ids.sort().reverse();
    let start = 0;
    if (options.pageToken) {
      // The token is the last job id of the previous page; anything else is a client bug, not "from the start".
      checkId(options.pageToken, "page.page_token");
      start = ids.findIndex((id) => id < options.pageToken!);
      if (start === -1) start = ids.length;
    }
    const jobs: JobRecord[] = [];
    let nextPageToken = "";
    for (let i = start; i < ids.length; i++) {
      const id = ids[i];
      if (options.kind && jobKindOf(id) !== options.kind) continue;
      let record: JobRecord;
      try {
        record = await this.get(id);
      } catch (error) {
        if (error instanceof NotFound) continue; // spec written, state not yet (or a stray prefix)
        throw error;
      }
      if (options.state && record.state !== options.state) continue;
      if (jobs.length === pageSize) {
        nextPageToken = jobs[jobs.length - 1].id;
        break;
      }
      jobs.push(record);
    }
    return { jobs, nextPageToken };
  }

  /**
   * Cancels a job: a QUEUED one at once, a RUNNING one by aborting its signal (it ends CANCELLED
   * when its runner returns). `FailedPrecondition` when it already ended.
   */
  async cancel(id: string): Promise<JobRecord> {
    const record = await this.get(id);
    if (TERMINAL_STATES.has(record.state)) {
      throw new FailedPrecondition(`job ${id} already ended (${record.state}); nothing to cancel`);
    }
    const running = this.#running.get(id);
    if (running) {
      running.controller.abort(new BertforgeError("CANCELLED", `job ${id} cancelled`));
      await running.done;
      return await this.get(id);
    }
    const index = this.#queue.indexOf(id);
    const local = this.#records.get(id);
    // Queued here, or a resume waiting out its backoff (its timer finds the record gone and drops it).
    if (local && (index !== -1 || local.state === "QUEUED")) {
      if (index !== -1) this.#queue.splice(index, 1);
      await this.#finish(local, "CANCELLED", {
        error: { code: "CANCELLED", message: "cancelled while queued" },
      });
      return structuredClone(local);
    }
    throw new FailedPrecondition(
      `job ${id} is ${record.state} in another process (${record.owner ?? "unknown"}); cancel it there`,
    );
  }

  /**
   * The job's events: every stored one (after `afterSeq`) in order, then new ones as they happen,
   * ending after the job's final state event. Works for jobs run by another process too (polling).
   */
  async *watch(id: string, options: WatchOptions = {}): AsyncIterable<JobEvent> {
    await this.get(id); // NotFound before the first yield
    let seq = options.afterSeq ?? 0;
    const signal = options.signal;
    let unreadable = 0;
    while (!signal?.aborted) {
      let event: JobEvent;
      try {
        event = await this.store.getJson<JobEvent>(eventKey(id, seq + 1));
      } catch (error) {
        // A store that writes objects in place (s3rver, some gateways; never S3, MinIO or the local store) can
        // show an event half-written: read it again after a poll, up to a point, rather than fail the watch.
        const halfWritten = error instanceof FailedPrecondition && ++unreadable <= MAX_UNREADABLE_READS;
        if (!(error instanceof NotFound) && !halfWritten) throw error;
        await this.#waitForEvent(id, signal);
        continue;
      }
      unreadable = 0;
      seq = event.seq;
      yield event;
      if (event.type === "state" && event.state && TERMINAL_STATES.has(event.state)) return;
    }
  }

  /**
   * Takes over the jobs a dead process left QUEUED or RUNNING (kinds this manager runs only):
   * QUEUED ones are queued again; RUNNING ones are resumed or failed per their kind's `onInterrupted`.
   */
  async recover(): Promise<{ requeued: string[]; resumed: string[]; failed: string[] }> {
    const outcome = { requeued: [] as string[], resumed: [] as string[], failed: [] as string[] };
    const orphans: JobRecord[] = [];
    for await (const entry of this.store.list(JOBS_PREFIX)) {
      if (!entry.isPrefix) continue;
      const id = entry.key.slice(JOBS_PREFIX.length, -1);
      if (this.#records.has(id) || !this.#kinds.has(jobKindOf(id))) continue;
      let record: JobRecord;
      try {
        record = await this.store.getJson<JobRecord>(`${JOBS_PREFIX}${id}/state.json`);
      } catch (error) {
        if (error instanceof NotFound) continue;
        throw error;
      }
      if (!TERMINAL_STATES.has(record.state)) orphans.push(record);
    }
    orphans.sort((a, b) => (a.id < b.id ? -1 : 1)); // oldest first keeps the queue order
    for (const record of orphans) {
      const definition = this.#kinds.get(record.kind)!;
      const lastSeq = await this.#lastStoredSeq(record.id, record.lastSeq);
      record.lastSeq = lastSeq;
      const previousOwner = record.owner;
      record.owner = this.instanceId;
      this.#records.set(record.id, record);
      this.#logs.set(record.id, new EventLog(lastSeq));
      if (record.state === "QUEUED") {
        await this.#transition(
          record,
          "QUEUED",
          `queued again: process ${previousOwner} exited before starting it`,
        );
        this.#queue.push(record.id);
        outcome.requeued.push(record.id);
        continue;
      }
      const maxAttempts = definition.maxAttempts ?? 3;
      const maxStalled = definition.maxStalledAttempts ?? 2;
      const resumable = (definition.onInterrupted ?? "fail") === "resume";
      // Did the interrupted attempt get further than the one before it? Its last progress says (state.json's
      // copy may be up to 20 events behind).
      const lastProgress = (await this.#lastProgressEvent(record.id, lastSeq))?.progress;
      if (lastProgress) record.progress = lastProgress;
      const done = record.progress?.done ?? 0;
      const retries = record.retries ?? { stalled: 0 };
      const stalled = retries.startedAt !== undefined && done <= retries.startedAt ? retries.stalled + 1 : 0;
      const interruption = `process ${previousOwner} exited while the job was RUNNING`;
      record.retries = {
        stalled,
        lastError: `${interruption} (attempt ${record.attempt}, progress ${done})`,
      };
      if (resumable && record.attempt < maxAttempts && stalled < maxStalled) {
        record.attempt += 1;
        const delay = stalled > 0 ? Math.round(backoffMs(stalled, this.#resumeBackoff)) : 0;
        await this.#transition(
          record,
          "QUEUED",
          `${interruption} (progress ${done}); resuming${
            delay ? ` in ${(delay / 1000).toFixed(1)}s (no progress since the attempt before)` : ""
          } (attempt ${record.attempt} of ${maxAttempts})`,
        );
        this.#queueAfter(record.id, delay);
        outcome.resumed.push(record.id);
      } else {
        const why = !resumable
          ? `jobs of kind ${record.kind} are not resumable`
          : stalled >= maxStalled
          ? `it stopped its process ${stalled} times in a row without getting past progress ${done} ` +
            `(maxStalledAttempts ${maxStalled}): it may be what stops the process`
          : `it was interrupted ${record.attempt} times (maxAttempts ${maxAttempts})`;
        await this.#finish(record, "FAILED", {
          error: {
            code: "ABORTED",
            message: `${interruption} and ${why}; submit it again`,
          },
        });
        outcome.failed.push(record.id);
      }
    }
    this.#pump();
    return outcome;
  }

  /**
   * Stops taking work. Running jobs are aborted but stay RUNNING in the store, so the next
   * manager's `recover()` resumes or fails them as their kind says; queued ones stay QUEUED.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#queue.length = 0;
    for (const timer of this.#delayed) clearTimeout(timer);
    this.#delayed.clear();
    const done = [...this.#running.values()].map((job) => {
      job.controller.abort(SHUTDOWN);
      return job.done;
    });
    await Promise.all(done);
    for (const wakers of this.#wakers.values()) for (const wake of wakers) wake();
  }

  /** Resolves when no job of this manager is queued or running (handy in tests and shutdown). */
  async idle(): Promise<void> {
    while (this.#queue.length > 0 || this.#running.size > 0 || this.#delayed.size > 0) {
      await Promise.all([...this.#running.values()].map((job) => job.done));
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }

  #newId(kind: string): string {
    // Strictly increasing times keep ids of one manager in submission order.
    const now = Math.max(Date.now(), this.#lastIdTime + 1);
    this.#lastIdTime = now;
    const stamp = new Date(now).toISOString().replace(/[-:TZ.]/g, ""); // yyyymmddhhmmssSSS
    return `${stamp}-${kind}-${crypto.randomUUID().slice(0, 6)}`;
  }

  /** Queues a job now or, for a resume under backoff, after `delayMs` (it stays QUEUED in the store meanwhile). */
  #queueAfter(id: string, delayMs: number): void {
    if (delayMs <= 0) {
      this.#queue.push(id);
      return;
    }
    const timer = setTimeout(() => {
      this.#delayed.delete(timer);
      if (this.#closed || !this.#records.has(id)) return;
      this.#queue.push(id);
      this.#pump();
    }, delayMs);
    this.#delayed.add(timer);
  }

  #pump(): void {
    while (!this.#closed && this.#running.size < this.#concurrency && this.#queue.length > 0) {
      const id = this.#queue.shift()!;
      const controller = new AbortController();
      const running: RunningJob = { controller, done: Promise.resolve() };
      this.#running.set(id, running);
      running.done = this.#run(id, controller).finally(() => {
        this.#running.delete(id);
        this.#pump();
      });
    }
  }

  /**
   * Runs the job in a `job.run` span under its submit call's trace: the job starts after the call returned
   * (perhaps behind others), so the context is the one captured at submit, not whatever is active now.
   * A job recovered from a dead process starts a trace of its own, linked to the submit call's.
   */
  #run(id: string, controller: AbortController): Promise<void> {
    const record = this.#records.get(id)!;
    const captured = this.#submitContexts.get(id);
    this.#submitContexts.delete(id);
    const submitted = !captured && record.traceparent
      ? spanContextFromTraceparent(record.traceparent)
      : undefined;
    return withSpan("job.run", {
      "bertforge.job.id": id,
      "bertforge.job.kind": record.kind,
      "bertforge.job.attempt": record.attempt,
    }, async (span) => {
      await this.#execute(id, controller);
      span.setAttribute("bertforge.job.state", record.state);
      // What the job made (instances, shards, model version...) where the trace shows it; nested values stay in
      // state.json.
      if (record.result && typeof record.result === "object") {
        for (const [key, value] of Object.entries(record.result)) {
          if (
            typeof value === "number" || typeof value === "boolean" ||
            (typeof value === "string" && value.length <= 256)
          ) {
            span.setAttribute(`bertforge.job.result.${key}`, value);
          }
        }
      }
      if (record.state === "FAILED") {
        span.setStatus({ code: SpanStatusCode.ERROR, message: record.error?.message ?? "failed" });
      }
    }, { parent: captured ?? ROOT_CONTEXT, ...(submitted ? { links: [submitted] } : {}) });
  }

  async #execute(id: string, controller: AbortController): Promise<void> {
    const record = this.#records.get(id)!;
    const definition = this.#kinds.get(record.kind)!;
    const resumed = record.attempt > 1;
    let lastEvent: JobEvent | undefined;
    if (resumed) lastEvent = await this.#lastNonStateEvent(id, record.lastSeq);
    let lastProgressAt = 0;
    let pendingProgress: { done: number; total?: number; message?: string } | null = null;
    const emit = (event: JobEventInput): Promise<void> => {
      if (!event || typeof event.type !== "string" || event.type === "state") {
        return Promise.reject(
          new InvalidArgument(
            `event type must be a string other than "state": got ${JSON.stringify(event?.type)}`,
          ),
        );
      }
      if (event.progress) record.progress = event.progress;
      const stored = this.#append(record, event).then(() => {}, (error) => {
        // Events that cannot be stored even after retries: stop the job (its checkpoints stay), never the process.
        if (error instanceof EventWriteFault) controller.abort(error);
        throw error;
      });
      // A runner may emit without awaiting (log lines): its failure must not surface as an unhandled rejection,
      // which ends the process; the abort above is how the job learns of it.
      stored.catch(() => {});
      return stored;
    };
    const ctx: JobContext = {
      jobId: id,
      kind: record.kind,
      spec: undefined,
      store: this.store,
      prefix: `${JOBS_PREFIX}${id}/`,
      signal: controller.signal,
      resumeInfo: { resumed, attempt: record.attempt, ...(lastEvent ? { lastEvent } : {}) },
      emit,
      progress: (done, total, message) => {
        const now = Date.now();
        if (now - lastProgressAt < this.#progressIntervalMs) {
          pendingProgress = { done, total, message };
          return Promise.resolve();
        }
        lastProgressAt = now;
        pendingProgress = null;
        return emit({
          type: "progress",
          progress: { done, ...(total !== undefined ? { total } : {}) },
          ...(message ? { message } : {}),
        });
      },
    };
    try {
      ctx.spec = await this.getSpec(id);
      record.startedAt ??= new Date().toISOString();
      if (record.retries) record.retries.startedAt = record.progress?.done ?? 0;
      await this.#transition(
        record,
        "RUNNING",
        resumed ? `running (resumed, attempt ${record.attempt})` : "running",
      );
      const result = await definition.run(ctx);
      controller.signal.throwIfAborted();
      const last = pendingProgress as { done: number; total?: number; message?: string } | null;
      if (last) {
        await emit({
          type: "progress",
          progress: { done: last.done, ...(last.total !== undefined ? { total: last.total } : {}) },
          ...(last.message ? { message: last.message } : {}),
        });
      }
      await this.#finish(record, "SUCCEEDED", { result: result ?? null });
    } catch (error) {
      if (controller.signal.reason === SHUTDOWN) return; // left RUNNING for recover()
      const fault = controller.signal.reason instanceof EventWriteFault
        ? controller.signal.reason
        : undefined;
      try {
        if (controller.signal.aborted && !fault) {
          await this.#finish(record, "CANCELLED", {
            error: { code: "CANCELLED", message: "cancelled by request" },
          });
        } else {
          const failure = fault ?? error;
          const code = failure instanceof BertforgeError ? failure.code : "INTERNAL";
          const message = failure instanceof Error ? failure.message : String(failure);
          await this.#finish(record, "FAILED", { error: { code, message } });
        }
      } catch (finishError) {
        // The final state could not be stored either: this manager answers FAILED/CANCELLED from memory, and
        // the store keeps the job RUNNING, so the next start resumes it from its last checkpoint.
        console.error(
          `job ${id}: could not record its end (${record.state}): ${
            (finishError as Error)?.message ?? finishError
          }`,
        );
      }
    }
  }

  async #transition(record: JobRecord, state: JobState, message: string): Promise<void> {
    record.state = state;
    await this.#append(record, { type: "state", message }, state);
  }

  async #finish(
    record: JobRecord,
    state: JobState,
    outcome: { result?: unknown; error?: { code: string; message: string } },
  ): Promise<void> {
    record.finishedAt = new Date().toISOString();
    this.#submitContexts.delete(record.id);
    if ("result" in outcome) record.result = outcome.result;
    if (outcome.error) record.error = outcome.error;
    await this.#transition(record, state, outcome.error?.message ?? state.toLowerCase());
    // Ended jobs are read back from the store; memory holds only live ones.
    this.#records.delete(record.id);
    this.#logs.delete(record.id);
  }

  /** Writes the event, then the state (so a reader of state.json never sees a seq not yet stored). */
  #append(record: JobRecord, input: JobEventInput, state?: JobState): Promise<JobEvent> {
    const log = this.#logs.get(record.id)!;
    return log.append(async (seq, stored) => {
      const event: JobEvent = {
        seq,
        time: new Date().toISOString(),
        type: input.type,
        ...(state ? { state } : {}),
        ...(input.message !== undefined ? { message: input.message } : {}),
        ...(input.progress ? { progress: input.progress } : {}),
        ...(input.data ? { data: input.data } : {}),
      };
      await this.#retryWrite(
        `event ${seq} of job ${record.id}`,
        () => this.store.putJson(eventKey(record.id, seq), event),
      );
      stored();
      record.lastSeq = seq;
      // Progress-only events do not rewrite state.json each time; transitions always do.
      if (state || seq % 20 === 0) {
        await this.#retryWrite(
          `state of job ${record.id}`,
          () => this.store.putJson(`${JOBS_PREFIX}${record.id}/state.json`, record),
        );
      }
      this.#wake(record.id);
      return event;
    });
  }

  /**
   * One store write, retried with backoff while `writeRetry.deadlineMs` allows: a store that is read-only,
   * full or unreachable for a moment must not fail a job. Past the deadline it throws EventWriteFault, with
   * the store's error as its cause. Invalid arguments are bugs, not weather: they are not retried.
   */
  async #retryWrite(what: string, write: () => Promise<unknown>): Promise<void> {
    const started = Date.now();
    for (let attempt = 1;; attempt++) {
      try {
        await write();
        return;
      } catch (error) {
        if (error instanceof InvalidArgument) throw error;
        const wait = backoffMs(attempt, this.#writeRetry);
        const elapsed = Date.now() - started;
        if (attempt >= this.#writeRetry.maxAttempts || elapsed + wait > this.#writeRetry.deadlineMs) {
          throw new EventWriteFault(
            `could not store the ${what} after ${attempt} tries over ${(elapsed / 1000).toFixed(1)}s: ${
              (error as Error)?.message ?? error
            }; the job's checkpoints are kept`,
            { cause: error },
          );
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }

  #wake(id: string): void {
    const wakers = this.#wakers.get(id);
    if (!wakers) return;
    this.#wakers.delete(id);
    for (const wake of wakers) wake();
  }

  /** Waits for this manager to record an event of the job, or a poll interval, or the signal. */
  #waitForEvent(id: string, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let wakers = this.#wakers.get(id);
      if (!wakers) this.#wakers.set(id, wakers = new Set());
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        wakers!.delete(done);
        resolve();
      };
      const timer = setTimeout(done, this.#pollIntervalMs);
      signal?.addEventListener("abort", done, { once: true });
      wakers.add(done);
    });
  }

  /** state.json may lag behind the events (it is rewritten every 20 progress events): probe forward. */
  async #lastStoredSeq(id: string, from: number): Promise<number> {
    let seq = from;
    while (await this.store.exists(eventKey(id, seq + 1))) seq++;
    return seq;
  }

  /** The job's latest event that carries progress (of the last 50), to see how far an interrupted attempt got. */
  async #lastProgressEvent(id: string, lastSeq: number): Promise<JobEvent | undefined> {
    for (let seq = lastSeq; seq >= 1 && seq > lastSeq - 50; seq--) {
      const event = await this.store.getJson<JobEvent>(eventKey(id, seq)).catch(() => undefined);
      if (event?.progress) return event;
    }
    return undefined;
  }

  async #lastNonStateEvent(id: string, lastSeq: number): Promise<JobEvent | undefined> {
    for (let seq = lastSeq; seq >= 1 && seq > lastSeq - 50; seq--) {
      const event = await this.store.getJson<JobEvent>(eventKey(id, seq)).catch(() => undefined);
      if (event && event.type !== "state") return event;
    }
    return undefined;
  }
}

function eventKey(id: string, seq: number): string {
  return `${JOBS_PREFIX}${id}/events/${String(seq).padStart(10, "0")}.json`;
}

/** `20261125150512345-trainvocab-ab12cd` → `trainvocab`. */
export function jobKindOf(id: string): string {
  const parts = id.split("-");
  return parts.length >= 3 ? parts.slice(1, -1).join("-") : "";
}

function checkId(id: string, field = "job id"): void {
  if (typeof id !== "string" || !/^\d{17}-[a-z][a-z0-9_]*-[0-9a-f]{6}$/.test(id)) {
    throw new InvalidArgument(
      `${field} must look like 20261125150512345-kind-ab12cd: got ${JSON.stringify(id)}`,
    );
  }
}

function positiveInteger(field: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgument(`${field} must be a positive integer: got ${value}`);
  }
  return value;
}

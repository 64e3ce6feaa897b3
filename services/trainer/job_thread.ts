/**
 * Runs a trainer job in a worker thread (job_worker.ts) and what both sides of that thread share: errors as
 * they cross it, and a cancellation flag a synchronous loop can read.
 *
 * Why a worker: a training step is seconds of synchronous engine work, and the loop yields to its event loop
 * only at log, eval and checkpoint points; on the service's own thread that stalled health checks, Watch,
 * ListJobs and Cancel for tens of seconds. In the worker the same job function runs unchanged, and the
 * service thread only stores the events it is sent.
 *
 * @module
 */
import { BertforgeError, Cancelled, type ErrorCode } from "../shared/errors.ts";
import { errorFromStatus, grpcCodeOf } from "../shared/rpc/status.ts";
import type { StoreSettings } from "../shared/store/mod.ts";
import type { JobOutcome } from "./jobs.ts";
import type { TrainerEvent } from "./loop.ts";
import type { StoredSpec } from "./service.ts";
import type { JobWorkerReply, JobWorkerRequest, JobWorkerRun } from "./job_worker.ts";

/** An error as it crosses the thread: the other side rebuilds the matching BertforgeError class from `code`. */
export interface WorkerError {
  code?: ErrorCode;
  name: string;
  message: string;
}

export function describeError(error: unknown): WorkerError {
  const e = error as { code?: unknown; name?: unknown; message?: unknown };
  return {
    ...(typeof e?.code === "string" ? { code: e.code as ErrorCode } : {}),
    name: typeof e?.name === "string" ? e.name : "Error",
    message: typeof e?.message === "string" ? e.message : String(error),
  };
}

/** The error the other thread reported, as the class callers catch (the gRPC client's code-to-class mapping). */
export function rebuildError(error: WorkerError): Error {
  if (error.code && error.code !== "INTERNAL") return errorFromStatus(grpcCodeOf(error.code), error.message);
  if (error.code) return new BertforgeError(error.code, error.message);
  const plain = new Error(error.message);
  plain.name = error.name;
  return plain;
}

const nativeAborted = Object.getOwnPropertyDescriptor(AbortSignal.prototype, "aborted")!.get!;
const nativeReason = Object.getOwnPropertyDescriptor(AbortSignal.prototype, "reason")!.get!;

/**
 * An AbortSignal that becomes aborted once another thread stores a non-zero value in `flag[0]`. The training
 * loop runs steps back to back without yielding to its event loop, so no message could abort a signal in time:
 * this one reads the flag (Atomics.load, a few nanoseconds) whenever `aborted`, `reason` or `throwIfAborted`
 * is consulted, and then aborts for real, so listeners fire too. `abort` aborts it from this thread.
 */
export function signalFromFlag(flag: Int32Array): { signal: AbortSignal; abort: () => void } {
  const controller = new AbortController();
  const signal = controller.signal;
  // Deno's abort() reads `aborted` itself: the flag keeps that read from aborting again (endless recursion).
  let aborting = false;
  const abort = () => {
    if (aborting) return;
    aborting = true;
    controller.abort(new Cancelled("job cancelled"));
  };
  const poll = () => {
    if (!aborting && Atomics.load(flag, 0) !== 0) abort();
  };
  Object.defineProperties(signal, {
    aborted: {
      get: () => {
        poll();
        return nativeAborted.call(signal);
      },
    },
    reason: {
      get: () => {
        poll();
        return nativeReason.call(signal);
      },
    },
    throwIfAborted: {
      value: () => {
        poll();
        AbortSignal.prototype.throwIfAborted.call(signal);
      },
    },
  });
  return { signal, abort };
}

export interface WorkerJobOptions {
  jobId: string;
  spec: StoredSpec;
  /** The store the worker opens: the same settings the service opened its own from. */
  store: StoreSettings;
  backend?: string;
  threads?: number;
  /** Aborting it raises the worker's flag: the job stops after its current step (checkpointing first). */
  signal: AbortSignal;
  /** Stores one event; its rejection is sent back and thrown inside the job, as an in-process emit would. */
  emit: (event: TrainerEvent) => Promise<void>;
}

/**
 * Runs `runPretrainJob`/`runFinetuneJob` for the spec in a fresh worker and resolves with its outcome (or
 * rejects with its error, rebuilt as its class). A worker that dies (an uncaught error, a message that cannot
 * be read) fails the job with INTERNAL; the service keeps running. The worker is terminated when the job ends.
 */
export function runJobInWorker(options: WorkerJobOptions): Promise<JobOutcome> {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(new URL("./job_worker.ts", import.meta.url).href, { type: "module" });
  const send = (message: JobWorkerRequest) => worker.postMessage(message);
  return new Promise<JobOutcome>((resolve, reject) => {
    let ended = false;
    const end = (settle: () => void) => {
      if (ended) return;
      ended = true;
      options.signal.removeEventListener("abort", onAbort);
      worker.terminate();
      settle();
    };
    const onAbort = () => {
      Atomics.store(flag, 0, 1);
      send({ type: "cancel" });
    };
    worker.onmessage = (event: MessageEvent<JobWorkerReply>) => {
      const reply = event.data;
      if (reply.type === "event") {
        options.emit(reply.event).then(
          () => send({ type: "ack", id: reply.id }),
          (error) => send({ type: "ack", id: reply.id, error: describeError(error) }),
        );
      } else if (reply.type === "done") {
        end(() => resolve(reply.outcome));
      } else {
        end(() => reject(rebuildError(reply.error)));
      }
    };
    // Unhandled, a worker's error is rethrown on this thread and ends the whole service.
    worker.onerror = (event) => {
      event.preventDefault();
      end(() =>
        reject(
          new BertforgeError("INTERNAL", `job ${options.jobId}: its training worker died (${event.message})`),
        )
      );
    };
    worker.onmessageerror = () => {
      end(() =>
        reject(
          new BertforgeError(
            "INTERNAL",
            `job ${options.jobId}: a message from its training worker could not be read`,
          ),
        )
      );
    };
    if (options.signal.aborted) onAbort();
    else options.signal.addEventListener("abort", onAbort, { once: true });
    const run: JobWorkerRun = {
      type: "run",
      jobId: options.jobId,
      spec: options.spec,
      store: options.store,
      ...(options.backend ? { backend: options.backend } : {}),
      ...(options.threads ? { threads: options.threads } : {}),
      cancelFlag: flag.buffer as SharedArrayBuffer,
    };
    send(run);
  });
}

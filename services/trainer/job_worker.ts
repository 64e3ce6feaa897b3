/**
 * The training worker: one pretrain or fine-tune job on its own thread, so the job's synchronous engine steps
 * block this thread instead of the service's event loop (health checks, Watch, ListJobs, Cancel, Submit).
 * job_thread.ts's runJobInWorker is its only client.
 *
 * The job body is the same `runPretrainJob`/`runFinetuneJob` the in-process path calls, over a store this
 * worker opens from the service's store settings (checkpoints and the published model are written from here).
 * Messages: `run` once; then `event`s go out, each answered by an `ack` once the parent has stored it (so an
 * `await ctx.emit()` keeps meaning "durable"), and one `done` or `error` ends the job. Cancellation arrives
 * in a SharedArrayBuffer flag the loop reads every step (it never yields to this thread's event loop between
 * steps, so a message would wait for the next log point); a `cancel` message also wakes awaits in flight.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { openStore, type StoreSettings } from "../shared/store/mod.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import type { TrainerEvent } from "./loop.ts";
import type { JobOutcome, TrainerJobContext } from "./jobs.ts";
import { runPretrainJob } from "./pretrain.ts";
import { runFinetuneJob } from "./finetune.ts";
import type { StoredSpec } from "./service.ts";
import { describeError, rebuildError, signalFromFlag, type WorkerError } from "./job_thread.ts";

export interface JobWorkerRun {
  type: "run";
  jobId: string;
  spec: StoredSpec;
  store: StoreSettings;
  backend?: string;
  threads?: number;
  /** One Int32: 0 while the job should go on, non-zero once it is cancelled or the service shuts down. */
  cancelFlag: SharedArrayBuffer;
}

export type JobWorkerRequest =
  | JobWorkerRun
  | { type: "ack"; id: number; error?: WorkerError }
  | { type: "cancel" };

export type JobWorkerReply =
  | { type: "event"; id: number; event: TrainerEvent }
  | { type: "done"; outcome: JobOutcome }
  | { type: "error"; error: WorkerError };

const pendingAcks = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();
let nextEventId = 1;
let abortNow: (() => void) | undefined;

function post(reply: JobWorkerReply): void {
  self.postMessage(reply);
}

/** Sends an event and resolves once the parent stored it; rejects with the parent's write error. */
function emit(event: TrainerEvent): Promise<void> {
  const id = nextEventId++;
  const acked = new Promise<void>((resolve, reject) => pendingAcks.set(id, { resolve, reject }));
  post({ type: "event", id, event });
  // Some emits are fire-and-forget (`void ctx.emit(...)` for engine log lines): a failed one must not become an
  // unhandled rejection that kills this worker; the manager fails the job on a persistent write fault anyway.
  acked.catch(() => {});
  return acked;
}

async function run(message: JobWorkerRun): Promise<void> {
  const { signal, abort } = signalFromFlag(new Int32Array(message.cancelFlag));
  abortNow = abort;
  let store: ObjectStore | undefined;
  try {
    store = openStore(message.store);
    const ctx: TrainerJobContext = {
      jobId: message.jobId,
      store,
      signal,
      emit,
      ...(message.backend ? { backend: message.backend } : {}),
      ...(message.threads ? { threads: message.threads } : {}),
    };
    const outcome = message.spec.kind === "pretrain"
      ? await runPretrainJob(message.spec.pretrain, ctx)
      : await runFinetuneJob(message.spec.finetune, ctx);
    post({ type: "done", outcome });
  } catch (error) {
    post({ type: "error", error: describeError(error) });
  } finally {
    await store?.close().catch(() => {});
  }
}

self.onmessage = (event: MessageEvent<JobWorkerRequest>) => {
  const message = event.data;
  if (message.type === "run") {
    void run(message);
  } else if (message.type === "ack") {
    const waiter = pendingAcks.get(message.id);
    pendingAcks.delete(message.id);
    if (message.error) waiter?.reject(rebuildError(message.error));
    else waiter?.resolve();
  } else if (message.type === "cancel") {
    abortNow?.();
  }
};

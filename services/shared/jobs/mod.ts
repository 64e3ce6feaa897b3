/**
 * Jobs: long work (vocab training, sharding, training) started by one call that returns an id at
 * once, persisted under `jobs/<id>/` in the store, watched as a stream of events, cancellable, and
 * recovered after a crash.
 *
 * ```ts ignore
 * import { JobManager } from "../shared/jobs/mod.ts";
 * import { storeFromEnv } from "../shared/store/mod.ts";
 *
 * const jobs = new JobManager(storeFromEnv(), { concurrency: 1 }); // the trainer: one job at a time
 * jobs.register<{ corpus: string; size: number }, { vocab: string }>("trainvocab", {
 *   validate: (spec) => checkTrainVocabSpec(spec), // throws InvalidArgument naming the field
 *   onInterrupted: "resume", // after a crash: run again with ctx.resumeInfo.resumed = true
 *   run: async (ctx) => {
 *     for (let line = 0; line < total; line++) {
 *       ctx.signal.throwIfAborted(); // Cancel
 *       await ctx.progress(line, total); // throttled progress events
 *     }
 *     return { vocab: `vocabs/${ctx.spec.corpus}` }; // stored as the job's result
 *   },
 * });
 * await jobs.recover(); // at start-up: take over what a dead process left QUEUED/RUNNING
 *
 * const id = await jobs.submit("trainvocab", { corpus: "poems", size: 8000 }); // QUEUED, returns at once
 * for await (const event of jobs.watch(id)) console.log(event.seq, event.type, event.progress ?? event.state);
 * const { jobs: page, nextPageToken } = await jobs.list({ kind: "trainvocab", pageSize: 20 });
 * await jobs.cancel(otherId);
 * ```
 *
 * @module
 */
export * from "./jobs.ts";
export * from "./proto.ts";
export * from "./handlers.ts";

/**
 * The tokenizer service process: `deno run -A services/tokenizer/main.ts [--port N] [--store DIR] ...` (flags
 * and variables: services/shared/config/settings.ts). Default port: base + 1.
 *
 * On start it takes over vocab-training jobs a previous process left QUEUED or RUNNING (they run again from
 * the start: training keeps nothing worth resuming).
 */
import { createLogger, openConfiguredStore, type Settings } from "../shared/config/mod.ts";
import { JobManager } from "../shared/jobs/mod.ts";
import { type Handlers, type RunningServer, serve } from "../shared/rpc/mod.ts";
import { runMain } from "../shared/rpc/main.ts";
import { TokenizerService } from "./service.ts";
import { TRAIN_VOCAB_KIND, trainVocabJob } from "./vocab_job.ts";

function serviceFor(settings: Settings): TokenizerService {
  const store = openConfiguredStore(settings);
  // One training job at a time: it is CPU bound and the host's cores also serve Tokenize calls.
  const jobs = new JobManager(store, { concurrency: 1 });
  jobs.register(TRAIN_VOCAB_KIND, trainVocabJob());
  return new TokenizerService({
    store,
    jobs,
    ...(settings.maxUploadBytes ? { maxUploadBytes: settings.maxUploadBytes } : {}),
  });
}

/** The TokenizerService handlers by method name, over a service of their own. */
export function handlers(settings: Settings): Handlers {
  return serviceFor(settings).handlers();
}

/** Starts the service with these settings; resolves once it listens and unfinished jobs are queued again. */
export async function start(settings: Settings): Promise<RunningServer> {
  const log = createLogger("tokenizer", settings.logLevel);
  const service = serviceFor(settings);
  const server = await serve({
    service: "TokenizerService",
    settings,
    handlers: service.handlers(),
    onShutdown: async () => {
      await service.jobs.close();
      await service.store.close();
    },
  });
  const recovered = await service.jobs.recover();
  if (recovered.resumed.length || recovered.requeued.length || recovered.failed.length) {
    log.info("recovered jobs of a previous run", recovered);
  }
  return server;
}

if (import.meta.main) await runMain("tokenizer", start);

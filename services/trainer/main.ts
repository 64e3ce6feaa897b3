/**
 * The trainer service process: `deno run -A services/trainer/main.ts [--port N] [--store DIR] [--backend B]
 * [--threads N] ...` (flags and variables: services/shared/config/settings.ts). Default port: base + 3.
 *
 * On start it resumes every job a previous process left unfinished, from the job's last complete
 * checkpoint; on SIGTERM/SIGINT the running job writes a checkpoint and stays RUNNING in the store, so the
 * next start picks it up.
 */
import { createLogger, openConfiguredStore, type Settings } from "../shared/config/mod.ts";
import { fullServiceName, type Handlers, type RunningServer, serve } from "../shared/rpc/mod.ts";
import { runMain } from "../shared/rpc/main.ts";
import { Trainer } from "./service.ts";

function tracingConfigured(): boolean {
  const env = (name: string) => Deno.env.get(name) ?? "";
  return !!(env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || env("OTEL_EXPORTER_OTLP_ENDPOINT") ||
    (env("OTEL_TRACES_EXPORTER") && env("OTEL_TRACES_EXPORTER") !== "none"));
}

function trainerFor(settings: Settings): Trainer {
  return new Trainer({
    store: openConfiguredStore(settings),
    // Jobs run in a worker thread, which opens its own store from the same settings. With a trace exporter set,
    // they stay in-process for now: the worker has no exporter, and a job's step spans would be lost.
    ...(tracingConfigured() ? {} : { storeSettings: settings.store }),
    ...(settings.backend && settings.backend !== "auto" ? { backend: settings.backend } : {}),
    ...(settings.threads ? { threads: settings.threads } : {}),
    ...(settings.maxUploadBytes ? { maxUploadBytes: settings.maxUploadBytes } : {}),
    log: createLogger("trainer", settings.logLevel),
  });
}

/** The TrainerService handlers by method name, over a trainer of their own (tests; `start` is the real thing). */
export function handlers(settings: Settings): Handlers {
  return trainerFor(settings).handlers();
}

/** Starts the service with these settings; resolves once it listens and unfinished jobs are queued again. */
export async function start(settings: Settings): Promise<RunningServer> {
  const log = createLogger("trainer", settings.logLevel);
  const trainer = trainerFor(settings);
  const server = await serve({
    service: "TrainerService",
    settings,
    handlers: trainer.handlers(),
    onShutdown: async () => {
      await trainer.close();
      await trainer.store.close();
    },
  });
  // Readiness (the TrainerService entry) waits for the previous run's jobs to be taken over; liveness (the
  // server's "" entry) says only that the process answers, so the probes never restart a trainer for recovering.
  server.health.setStatus(fullServiceName("TrainerService"), "NOT_SERVING");
  const recovered = await trainer.recover();
  server.health.setStatus(fullServiceName("TrainerService"), "SERVING");
  if (recovered.resumed.length || recovered.requeued.length || recovered.failed.length) {
    log.info("recovered jobs of a previous run", recovered);
  }
  return server;
}

if (import.meta.main) await runMain("trainer", start);

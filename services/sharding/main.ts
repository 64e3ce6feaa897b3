/**
 * The sharding service process: `deno run -A services/sharding/main.ts [--port N] [--store DIR] ...`
 * (flags and variables: services/shared/config/settings.ts). Default port: base + 2.
 *
 * On start it takes over builds a previous process left unfinished (they start over: an unpublished set
 * leaves nothing worth keeping); on SIGTERM/SIGINT a running build stops and stays RUNNING in the store,
 * so the next start picks it up.
 */
import { createLogger, openConfiguredStore, type Settings } from "../shared/config/mod.ts";
import { type Handlers, type RunningServer, serve } from "../shared/rpc/mod.ts";
import { runMain } from "../shared/rpc/main.ts";
import { Sharder } from "./service.ts";

function sharderFor(settings: Settings): Sharder {
  return new Sharder({
    store: openConfiguredStore(settings),
    log: createLogger("sharding", settings.logLevel),
    ...(settings.threads ? { workers: settings.threads } : {}),
  });
}

/** The ShardingService handlers by method name, over a sharder of their own (tests; `start` is the real thing). */
export function handlers(settings: Settings): Handlers {
  return sharderFor(settings).handlers();
}

/** Starts the service with these settings; resolves once it listens and unfinished builds are queued again. */
export async function start(settings: Settings): Promise<RunningServer> {
  const log = createLogger("sharding", settings.logLevel);
  const sharder = sharderFor(settings);
  const server = await serve({
    service: "ShardingService",
    settings,
    handlers: sharder.handlers(),
    onShutdown: async () => {
      await sharder.close();
      await sharder.store.close();
    },
  });
  const recovered = await sharder.recover();
  if (recovered.resumed.length || recovered.requeued.length || recovered.failed.length) {
    log.info("recovered builds of a previous run", recovered);
  }
  return server;
}

if (import.meta.main) await runMain("sharding", start);

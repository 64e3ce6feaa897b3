/**
 * The sharding service process: `deno run -A services/sharding/main.ts [--port N] [--store DIR] ...` (flags and
 * variables: services/shared/config/settings.ts). Placeholder until its issue lands: every RPC of
 * ShardingService answers UNIMPLEMENTED, while health and reflection already work, so the fleet starts.
 *
 * Owners: return the real handlers from `handlers()` (keep them in service.ts), open what they need from
 * `settings` (the store through openConfiguredStore), and keep `start()`'s signature: fleet and the e2e
 * tests call it.
 */
import type { Settings } from "../shared/config/mod.ts";
import { type Handlers, type RunningServer, serve } from "../shared/rpc/mod.ts";
import { runMain } from "../shared/rpc/main.ts";

/** The ShardingService handlers by method name; none yet. */
export function handlers(_settings: Settings): Handlers {
  return {};
}

/** Starts the service with these settings; resolves once it listens. */
export async function start(settings: Settings): Promise<RunningServer> {
  return await serve({ service: "ShardingService", settings, handlers: handlers(settings) });
}

if (import.meta.main) await runMain("sharding", start);

/**
 * Service settings from flags then environment (docs/conventions.md), and a tiny leveled logger.
 *
 * ```ts
 * import { createLogger, loadSettings, openConfiguredStore } from "../shared/config/mod.ts";
 *
 * const settings = loadSettings("tokenizer"); // Deno.args + Deno.env; throws InvalidArgument on bad input
 * const log = createLogger("tokenizer", settings.logLevel);
 * const store = openConfiguredStore(settings); // local folder or S3, as configured
 * log.info("listening", { port: settings.port });
 * ```
 *
 * @module
 */
import { openStore } from "../store/mod.ts";
import type { ObjectStore } from "../store/store.ts";
import type { Settings } from "./settings.ts";

export * from "./settings.ts";
export * from "./log.ts";

/** Opens the store the settings name, through the store's own factory. */
export function openConfiguredStore(settings: Pick<Settings, "store">): ObjectStore {
  return openStore(settings.store);
}

/**
 * runMain(): the body of every `services/<name>/main.ts`. Reads the settings (a bad flag or variable exits
 * 2 with the message), starts the service, stops it gracefully on SIGTERM/SIGINT, and, when started by
 * `fleet` (BERTFORGE_STOP_ON_STDIN_EOF=1), also when its stdin closes, so a fleet that dies hard never
 * leaves orphan services behind. Exits 0 after a clean stop, 1 when the service could not start.
 */
import { BertforgeError } from "../errors.ts";
import { createLogger } from "../config/log.ts";
import {
  loadSettings,
  type LoadSettingsOptions,
  type ServiceKey,
  type Settings,
} from "../config/settings.ts";
import type { RunningServer } from "./serve.ts";

export async function runMain(
  service: ServiceKey,
  start: (settings: Settings) => Promise<RunningServer>,
  options: LoadSettingsOptions = {},
): Promise<never> {
  let settings: Settings;
  try {
    settings = loadSettings(service, options);
  } catch (error) {
    console.error(`${service}: ${(error as Error).message}`);
    Deno.exit(2);
  }
  const log = createLogger(service, settings.logLevel);
  let server: RunningServer;
  try {
    server = await start(settings);
  } catch (error) {
    const message = error instanceof BertforgeError
      ? error.message
      : (error as Error)?.stack ?? String(error);
    log.error("cannot start", { error: message });
    Deno.exit(1);
  }
  if (Deno.env.get("BERTFORGE_STOP_ON_STDIN_EOF") === "1") {
    (async () => {
      const buffer = new Uint8Array(1024);
      try {
        while ((await Deno.stdin.read(buffer)) !== null) { /* the parent writes nothing; wait for EOF */ }
      } catch {
        // a broken stdin means the parent is gone too
      }
      await server.shutdown("the parent process (fleet) went away");
    })();
  }
  await server.finished;
  // A pending stdin read would keep the process alive after a signal-initiated stop.
  Deno.exit(0);
}

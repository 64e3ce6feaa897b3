/**
 * `deno task fleet [--store DIR | --s3 URL] [--port-base N|auto] [--only tokenizer,sharding]`: starts the four
 * services as separate processes (as the deployments run them), prefixes their logs, waits until each
 * reports SERVING on grpc.health.v1, and stops them all on Ctrl-C or SIGTERM.
 *
 * `--port-base auto` picks a base whose ports are free (freePortBase) and, should another program take one of
 * them between the check and the bind, starts again on a fresh base; the ready line (`{"fleet":"ready",
 * "port_base":N,...}` on stdout) names the base to give `bertctl --port-base`.
 *
 * No orphans: each service is told to stop when its stdin closes (BERTFORGE_STOP_ON_STDIN_EOF), so even a
 * fleet killed with SIGKILL takes its services down with it. Exit codes: 0 after a clean stop, 1 when a
 * service fails to start or dies, 2 for a usage error.
 */
import { fromFileUrl, resolve } from "@std/path";
import { InvalidArgument } from "../shared/errors.ts";
import {
  loadSettings,
  PORT_OFFSETS,
  SERVICE_KEYS,
  type ServiceKey,
  type Settings,
  storeEnv,
} from "../shared/config/settings.ts";
import { waitForServing } from "../shared/rpc/client.ts";
import { fullServiceName, type ServiceName } from "../shared/rpc/load.ts";

const REPO_ROOT = fromFileUrl(new URL("../..", import.meta.url));

const SERVICE_NAMES: Record<ServiceKey, ServiceName> = {
  tokenizer: "TokenizerService",
  sharding: "ShardingService",
  trainer: "TrainerService",
  inference: "InferenceService",
};

const COLORS: Record<ServiceKey, string> = {
  tokenizer: "36",
  sharding: "35",
  trainer: "33",
  inference: "32",
};

export interface FleetOptions {
  settings: Settings;
  /** Which services; @default all four */
  only?: ServiceKey[];
  /** How long each service may take to report SERVING. @default 120000 */
  startupTimeoutMs?: number;
  /** Receives every log line of every service, prefixed. @default stderr */
  output?: (line: string) => void;
}

/** How many of a service's last log lines a failed start shows. */
const LAST_LINES = 15;

/** A service exited before it was SERVING; `lastLines` are its last log lines, unprefixed. */
export class FleetStartError extends Error {
  constructor(readonly member: ServiceKey, readonly code: number, readonly lastLines: string[]) {
    super(
      `${member} exited while starting (exit code ${code}); its last log lines:\n` +
        lastLines.map((line) => `  ${member.padEnd(9)}| ${line}`).join("\n"),
    );
    this.name = "FleetStartError";
  }

  /** Another program holds one of the fleet's ports: a fresh port base may succeed where a retry cannot. */
  get portTaken(): boolean {
    return this.lastLines.some((line) => /EADDRINUSE|address already in use/i.test(line));
  }
}

/** Whether every port a fleet on `base` binds (N+1 .. N+5, conventions.md) can be bound on `host` now. */
export function portsFree(base: number, host = "127.0.0.1"): boolean {
  for (const offset of Object.values(PORT_OFFSETS)) {
    try {
      Deno.listen({ hostname: host, port: base + offset }).close();
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * A port base whose ports are free, drawn at random from [20000, 60000) in steps of 10: two fleets started
 * at the same moment (two demos in two clones) then rarely probe the same base, and the one that loses a race
 * for a port sees EADDRINUSE and draws again (`portTaken`).
 */
export function freePortBase(options: { host?: string; random?: () => number } = {}): number {
  const random = options.random ?? Math.random;
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20000 + Math.floor(random() * 4000) * 10;
    if (portsFree(base, options.host)) return base;
  }
  throw new Error("no free port base found in 200 tries between 20000 and 60000: pass --port-base N");
}

export interface FleetMember {
  key: ServiceKey;
  address: string;
  pid: number;
  /** Resolves with the exit code when the process ends. */
  exited: Promise<number>;
}

export interface Fleet {
  members: FleetMember[];
  /** SIGTERM to every service, SIGKILL to those still running after the grace period. */
  stop(): Promise<void>;
  /** Resolves with the first member that exited while the fleet was not stopping. */
  died: Promise<FleetMember>;
}

function prefixer(key: ServiceKey, output: (line: string) => void, color: boolean) {
  const label = color ? `\x1b[${COLORS[key]}m${key.padEnd(9)}\x1b[0m|` : `${key.padEnd(9)}|`;
  return async (stream: ReadableStream<Uint8Array>) => {
    let pending = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      pending += text;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) output(`${label} ${line}`);
    }
    if (pending) output(`${label} ${pending}`);
  };
}

function defaultOutput(line: string) {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
  } catch {
    // stderr gone: nothing to tell
  }
}

/** Starts the services and resolves once every one is SERVING; rejects (after stopping them) otherwise. */
export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const { settings } = options;
  const only = options.only ?? [...SERVICE_KEYS];
  const output = options.output ?? defaultOutput;
  const color = options.output === undefined && Deno.stderr.isTerminal() && !Deno.env.get("NO_COLOR");
  const store = "dir" in settings.store ? { dir: resolve(settings.store.dir) } : settings.store;
  const env: Record<string, string> = {
    ...storeEnv(store),
    BERTFORGE_STOP_ON_STDIN_EOF: "1",
    BERTFORGE_LOG_LEVEL: settings.logLevel,
    // The services find each other through the same port base.
    BERTFORGE_TOKENIZER_ADDR: settings.peers.tokenizer,
    BERTFORGE_SHARDING_ADDR: settings.peers.sharding,
    BERTFORGE_TRAINER_ADDR: settings.peers.trainer,
    BERTFORGE_INFERENCE_ADDR: settings.peers.inference,
    BERTFORGE_INFERENCE_HTTP: settings.peers.inferenceHttp,
  };
  if (settings.authToken) env.BERTFORGE_AUTH_TOKEN = settings.authToken;
  if (settings.tls?.certFile && settings.tls.keyFile) {
    env.BERTFORGE_TLS_CERT = resolve(settings.tls.certFile);
    env.BERTFORGE_TLS_KEY = resolve(settings.tls.keyFile);
  }
  // With TLS on, the health wait trusts the given CA, else the services' own (self-signed) certificate.
  const healthTls = settings.tls?.certFile
    ? { tls: { caFile: resolve(settings.tls.caFile ?? settings.tls.certFile) } }
    : {};

  let stopping = false;
  const members: (FleetMember & {
    child: Deno.ChildProcess;
    stdin: WritableStreamDefaultWriter;
    lastLines: string[];
  })[] = [];
  let reportDeath!: (member: FleetMember) => void;
  const died = new Promise<FleetMember>((resolve) => (reportDeath = resolve));

  for (const key of only) {
    const port = settings.portBase + PORT_OFFSETS[key];
    const args = [
      "run",
      "-A",
      `services/${key}/main.ts`,
      "--host",
      settings.host,
      "--port",
      String(port),
      "--port-base",
      String(settings.portBase),
    ];
    if (key === "inference") args.push("--http-port", String(settings.httpPort));
    const child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: REPO_ROOT,
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Kept for the error of a failed start: the console may be a log file nobody reads (the demo's).
    const lastLines: string[] = [];
    const prefix = prefixer(key, (line) => {
      output(line);
      lastLines.push(line.slice(line.indexOf("|") + 2));
      if (lastLines.length > LAST_LINES) lastLines.shift();
    }, color);
    const logs = Promise.all([prefix(child.stdout), prefix(child.stderr)]).catch(() => {});
    const exited = child.status.then(async (status) => {
      await logs;
      return status.code;
    });
    const member = {
      key,
      address: `${settings.host === "0.0.0.0" ? "127.0.0.1" : settings.host}:${port}`,
      pid: child.pid,
      exited,
      child,
      stdin: child.stdin.getWriter(),
      lastLines,
    };
    members.push(member);
    exited.then(() => {
      if (!stopping) reportDeath(member);
    });
  }

  const stop = async () => {
    stopping = true;
    for (const member of members) {
      try {
        member.child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    const grace = settings.shutdownGraceMs + 5000;
    await Promise.all(members.map(async (member) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          try {
            member.child.kill("SIGKILL");
          } catch {
            // already gone
          }
          resolve();
        }, grace);
      });
      await Promise.race([member.exited, killed]);
      await member.exited;
      clearTimeout(timer);
      await member.stdin.close().catch(() => {});
    }));
  };

  const timeoutMs = options.startupTimeoutMs ?? 120_000;
  const abort = new AbortController();
  try {
    await Promise.race([
      Promise.all(members.map((member) =>
        waitForServing(member.address, {
          service: fullServiceName(SERVICE_NAMES[member.key]),
          timeoutMs,
          signal: abort.signal,
          authToken: "",
          ...healthTls,
        })
      )),
      died.then(async (member) => {
        const code = await member.exited;
        throw new FleetStartError(member.key, code, members.find((m) => m === member)?.lastLines ?? []);
      }),
    ]);
  } catch (error) {
    abort.abort();
    await stop();
    throw error;
  }
  return { members, stop, died };
}

/**
 * `args` with `--port-base auto` (or `=auto`) replaced by `base`; undefined when the base is not `auto`, so the
 * settings loader reads a number or the environment as before.
 */
export function resolveAutoPortBase(args: string[], base: () => number): string[] | undefined {
  const at = args.findIndex((a, i) =>
    (a === "--port-base" && args[i + 1] === "auto") || a === "--port-base=auto"
  );
  if (at < 0) return undefined;
  const value = String(base());
  return args[at] === "--port-base"
    ? [...args.slice(0, at), "--port-base", value, ...args.slice(at + 2)]
    : [...args.slice(0, at), `--port-base=${value}`, ...args.slice(at + 1)];
}

/** Fresh bases tried when `--port-base auto` lost a race for a port. */
const AUTO_PORT_ATTEMPTS = 3;

if (import.meta.main) {
  const auto = resolveAutoPortBase(Deno.args, () => 0) !== undefined;
  const settingsFor = (args: string[]) =>
    loadSettings(undefined, {
      args,
      extraFlags: { string: ["only", "startup-timeout-ms"], boolean: ["help"] },
    });
  const freshArgs = () => resolveAutoPortBase(Deno.args, () => freePortBase()) ?? Deno.args;
  let settings: Settings;
  let only: ServiceKey[] | undefined;
  let startupTimeoutMs: number | undefined;
  try {
    settings = settingsFor(freshArgs());
    if (settings.flags.help) {
      console.log(
        "usage: deno task fleet [--store DIR | --s3 URL] [--port-base N|auto] [--host H] [--only tokenizer,sharding,...]\n" +
          "       [--log-level debug|info|warn|error] [--auth-token T] [--startup-timeout-ms MS]",
      );
      Deno.exit(0);
    }
    if (settings.args.length > 0) {
      throw new InvalidArgument(`fleet takes no arguments: got "${settings.args[0]}"`);
    }
    if (typeof settings.flags.only === "string" && settings.flags.only !== "") {
      only = settings.flags.only.split(",").map((s: string) => s.trim()) as ServiceKey[];
      for (const key of only) {
        if (!SERVICE_KEYS.includes(key)) {
          throw new InvalidArgument(
            `--only must list services among ${SERVICE_KEYS.join(", ")}: got "${key}"`,
          );
        }
      }
    }
    if (typeof settings.flags["startup-timeout-ms"] === "string") {
      startupTimeoutMs = Number(settings.flags["startup-timeout-ms"]);
      if (!(startupTimeoutMs > 0)) {
        throw new InvalidArgument("--startup-timeout-ms must be a positive number");
      }
    }
  } catch (error) {
    console.error(`fleet: ${(error as Error).message}`);
    Deno.exit(2);
  }

  const log = (message: string) => defaultOutput(`fleet    | ${message}`);
  let fleet: Fleet | undefined;
  let stopRequested = false;
  const onSignal = async (signal: Deno.Signal) => {
    if (stopRequested) return;
    stopRequested = true;
    log(`${signal}: stopping the services`);
    await fleet?.stop();
    log("stopped");
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, () => onSignal(signal));

  const where = "dir" in settings.store
    ? `store ${resolve(settings.store.dir)}`
    : `S3 ${settings.store.s3.url}`;
  for (let attempt = 1; !fleet; attempt++) {
    log(`starting ${(only ?? SERVICE_KEYS).join(", ")} on port base ${settings.portBase} (${where})`);
    try {
      fleet = await startFleet({
        settings,
        ...(only ? { only } : {}),
        ...(startupTimeoutMs ? { startupTimeoutMs } : {}),
      });
    } catch (error) {
      if (auto && error instanceof FleetStartError && error.portTaken && attempt < AUTO_PORT_ATTEMPTS) {
        log(`port base ${settings.portBase} was taken while starting (${error.member}): drawing another`);
        settings = settingsFor(freshArgs());
        continue;
      }
      log(`failed to start: ${(error as Error).message}`);
      Deno.exit(1);
    }
  }
  if (stopRequested) await new Promise(() => {}); // the signal handler exits
  const table = fleet.members.map((m) => `${m.key}=${m.address}`).join(" ");
  log(
    `ready: ${table}${
      (only ?? SERVICE_KEYS).includes("inference") ? ` inference_http=${settings.peers.inferenceHttp}` : ""
    }`,
  );
  console.log(
    JSON.stringify({
      fleet: "ready",
      port_base: settings.portBase,
      services: Object.fromEntries(fleet.members.map((m) => [m.key, m.address])),
    }),
  );
  const dead = await fleet.died;
  if (!stopRequested) {
    log(`${dead.key} exited with code ${await dead.exited}: stopping the others`);
    stopRequested = true;
    await fleet.stop();
    Deno.exit(1);
  }
}

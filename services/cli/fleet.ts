/**
 * `deno task fleet [--store DIR | --s3 URL] [--port-base N|auto] [--only tokenizer,sharding]`: starts the four
 * services as separate processes (as the deployments run them), prefixes their logs, waits until each
 * reports SERVING on grpc.health.v1, and stops them all on Ctrl-C or SIGTERM.
 *
 * `--port-base auto` picks a base whose ports are free (freePortBase) and, should another program take one of
 * them between the check and the bind, starts again on a fresh base; the ready line (`{"fleet":"ready",
 * "port_base":N,...}` on stdout) names the base to give `bertctl --port-base`.
 *
 * A service that dies once the fleet is up is restarted with backoff (RestartPolicy, like a Kubernetes
 * `restartPolicy: Always`), the others untouched; each death and restart is a line on stderr (exit code or
 * signal, last log lines, when it restarts) and a JSON line on stdout (`{"fleet":"died",...}`,
 * `{"fleet":"restarted",...,"pid":N}`). The ready line names each service's pid.
 *
 * No orphans: each service is told to stop when its stdin closes (BERTFORGE_STOP_ON_STDIN_EOF), so even a
 * fleet killed with SIGKILL takes its services down with it. Exit codes: 0 after a clean stop, 1 when a
 * service fails to start, 2 for a usage error.
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
  /** Receives every log line of every service, prefixed, and the fleet's own lines. @default stderr */
  output?: (line: string) => void;
  /** Overrides parts of DEFAULT_RESTART_POLICY. */
  restart?: Partial<RestartPolicy>;
  /** Told of every death and restart after the start. */
  onEvent?: (event: FleetEvent) => void;
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
  /** The process now running the service; a restart changes it. */
  pid: number;
  /** Resolves with the exit code when the current process ends. */
  exited: Promise<number>;
  /** How many times the fleet restarted this service. */
  restarts: number;
}

/**
 * When a service that was serving dies, the fleet starts it again, as a Kubernetes `restartPolicy: Always`
 * does: the wait doubles with each death in a row (capped), and a service that ran for `resetAfterMs`
 * before dying starts over at `initialBackoffMs`. `crashLoopFailures` deaths within `fastFailMs` of their
 * start, inside `crashLoopWindowMs`, mark a crash loop: said loudly, retried at the cap, the others kept up.
 */
export interface RestartPolicy {
  /** @default 1000 */
  initialBackoffMs: number;
  /** @default 30000 */
  maxBackoffMs: number;
  /** A run shorter than this is a fast failure. @default 10000 */
  fastFailMs: number;
  /** A run this long forgets the deaths before it. @default 60000 */
  resetAfterMs: number;
  /** @default 5 */
  crashLoopFailures: number;
  /** @default 120000 */
  crashLoopWindowMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  initialBackoffMs: 1000,
  maxBackoffMs: 30_000,
  fastFailMs: 10_000,
  resetAfterMs: 60_000,
  crashLoopFailures: 5,
  crashLoopWindowMs: 120_000,
};

/** What the fleet did to a service after it started; `fleet` prints each as a JSON line on stdout. */
export type FleetEvent =
  | {
    fleet: "died";
    service: ServiceKey;
    pid: number;
    exit_code: number;
    signal: string | null;
    ran_ms: number;
    restart_in_ms: number;
    crash_loop: boolean;
  }
  | { fleet: "restarted"; service: ServiceKey; pid: number; restarts: number };

export interface Fleet {
  members: FleetMember[];
  /** SIGTERM to every service, SIGKILL to those still running after the grace period; no more restarts. */
  stop(): Promise<void>;
}

/** "killed by SIGKILL" or "exit code 1": how a child process ended, for a person. */
export function describeExit(status: Deno.CommandStatus): string {
  return status.signal ? `killed by ${status.signal} (exit code ${status.code})` : `exit code ${status.code}`;
}

/**
 * The wait before restarting a service that died `deathsInARow` times without a long run in between, and
 * whether it is crash-looping given the times (ms) of its recent fast failures, this one included.
 */
export function restartDelay(
  deathsInARow: number,
  fastFailures: number[],
  now: number,
  policy: RestartPolicy,
): { delayMs: number; crashLoop: boolean } {
  const recent = fastFailures.filter((at) => now - at <= policy.crashLoopWindowMs);
  const crashLoop = recent.length >= policy.crashLoopFailures;
  const delayMs = crashLoop
    ? policy.maxBackoffMs
    : Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** Math.max(0, deathsInARow - 1));
  return { delayMs, crashLoop };
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

/** One service under the fleet: its current process and what the restart policy remembers of it. */
interface Member extends FleetMember {
  child: Deno.ChildProcess;
  stdin: WritableStreamDefaultWriter;
  /** The current process's last log lines, unprefixed. */
  lastLines: string[];
  startedAt: number;
  deathsInARow: number;
  fastFailures: number[];
  /** Pending restart or health wait, cancelled by stop(). */
  pending: AbortController | undefined;
}

/**
 * Starts the services and resolves once every one is SERVING; rejects (after stopping them) otherwise.
 * From then on a service that dies is restarted under `restart` (DEFAULT_RESTART_POLICY), and the others
 * keep running.
 */
export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const { settings } = options;
  const only = options.only ?? [...SERVICE_KEYS];
  const output = options.output ?? defaultOutput;
  const policy = { ...DEFAULT_RESTART_POLICY, ...options.restart };
  const say = (line: string) => output(`fleet    | ${line}`);
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
  // Through the environment, never argv: /proc/<pid>/environ is readable only by the same user, while
  // every user sees the command lines in `ps`.
  if (settings.authToken) env.BERTFORGE_AUTH_TOKEN = settings.authToken;
  if (settings.tls?.certFile && settings.tls.keyFile) {
    env.BERTFORGE_TLS_CERT = resolve(settings.tls.certFile);
    env.BERTFORGE_TLS_KEY = resolve(settings.tls.keyFile);
  }
  // With TLS on, the health wait trusts the given CA, else the services' own (self-signed) certificate.
  const healthTls = settings.tls?.certFile
    ? { tls: { caFile: resolve(settings.tls.caFile ?? settings.tls.certFile) } }
    : {};
  const timeoutMs = options.startupTimeoutMs ?? 120_000;
  const serving = (member: Member, signal: AbortSignal) =>
    waitForServing(member.address, {
      service: fullServiceName(SERVICE_NAMES[member.key]),
      timeoutMs,
      signal,
      authToken: "",
      ...healthTls,
    });

  let stopping = false;
  let started = false;
  const members: Member[] = [];
  let reportStartDeath!: (member: Member) => void;
  const startDeath = new Promise<Member>((resolve) => (reportStartDeath = resolve));

  const spawn = (member: Member) => {
    const port = settings.portBase + PORT_OFFSETS[member.key];
    const args = [
      "run",
      "-A",
      `services/${member.key}/main.ts`,
      "--host",
      settings.host,
      "--port",
      String(port),
      "--port-base",
      String(settings.portBase),
    ];
    if (member.key === "inference") args.push("--http-port", String(settings.httpPort));
    const child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: REPO_ROOT,
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Kept for the error of a failed start and the line of a death: the console may be a log file nobody
    // reads (the demo's).
    const lastLines: string[] = [];
    const prefix = prefixer(member.key, (line) => {
      output(line);
      lastLines.push(line.slice(line.indexOf("|") + 2));
      if (lastLines.length > LAST_LINES) lastLines.shift();
    }, color);
    const logs = Promise.all([prefix(child.stdout), prefix(child.stderr)]).catch(() => {});
    const status = child.status.then(async (status) => {
      await logs;
      return status;
    });
    Object.assign(member, {
      child,
      pid: child.pid,
      stdin: child.stdin.getWriter(),
      lastLines,
      startedAt: Date.now(),
      exited: status.then((s) => s.code),
    });
    status.then((s) => {
      if (stopping) return;
      if (!started) reportStartDeath(member);
      else onDeath(member, s);
    });
  };

  const onDeath = (member: Member, status: Deno.CommandStatus) => {
    member.pending?.abort();
    const now = Date.now();
    const ranMs = now - member.startedAt;
    member.deathsInARow = ranMs >= policy.resetAfterMs ? 1 : member.deathsInARow + 1;
    if (ranMs < policy.fastFailMs) member.fastFailures.push(now);
    member.fastFailures = member.fastFailures.filter((at) => now - at <= policy.crashLoopWindowMs);
    const { delayMs, crashLoop } = restartDelay(member.deathsInARow, member.fastFailures, now, policy);
    say(
      `${member.key} (pid ${member.pid}) died after ${(ranMs / 1000).toFixed(1)} s, ${
        describeExit(status)
      }; ` +
        `its last log lines:\n` +
        member.lastLines.map((line) => `  ${member.key.padEnd(9)}| ${line}`).join("\n"),
    );
    if (crashLoop) {
      say(
        `!!! ${member.key} is crash-looping: ${member.fastFailures.length} deaths within ${
          policy.fastFailMs / 1000
        } s ` +
          `of starting in the last ${policy.crashLoopWindowMs / 1000} s. The other services stay up; ` +
          `retrying ${member.key} every ${policy.maxBackoffMs / 1000} s: read its log lines above !!!`,
      );
    }
    say(`restarting ${member.key} in ${(delayMs / 1000).toFixed(1)} s (restart ${member.restarts + 1})`);
    options.onEvent?.({
      fleet: "died",
      service: member.key,
      pid: member.pid,
      exit_code: status.code,
      signal: status.signal,
      ran_ms: ranMs,
      restart_in_ms: delayMs,
      crash_loop: crashLoop,
    });
    const pending = new AbortController();
    member.pending = pending;
    const timer = setTimeout(async () => {
      if (stopping || pending.signal.aborted) return;
      member.restarts++;
      spawn(member);
      try {
        await serving(member, pending.signal);
      } catch {
        // Died again (its exit is handled there), stopped, or never SERVING: a hung service is the
        // liveness probe's business, which the fleet does not have; say so and leave it running.
        if (!pending.signal.aborted) say(`${member.key} (pid ${member.pid}) is not SERVING after restart`);
        return;
      }
      say(`${member.key} is back (pid ${member.pid}, restart ${member.restarts})`);
      options.onEvent?.({
        fleet: "restarted",
        service: member.key,
        pid: member.pid,
        restarts: member.restarts,
      });
    }, delayMs);
    pending.signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  };

  for (const key of only) {
    const port = settings.portBase + PORT_OFFSETS[key];
    const member = {
      key,
      address: `${settings.host === "0.0.0.0" ? "127.0.0.1" : settings.host}:${port}`,
      restarts: 0,
      deathsInARow: 0,
      fastFailures: [],
      pending: undefined,
    } as unknown as Member;
    spawn(member);
    members.push(member);
  }

  const stop = async () => {
    stopping = true;
    for (const member of members) {
      member.pending?.abort();
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

  const abort = new AbortController();
  try {
    await Promise.race([
      Promise.all(members.map((member) => serving(member, abort.signal))),
      startDeath.then(async (member) => {
        const code = await member.exited;
        throw new FleetStartError(member.key, code, member.lastLines);
      }),
    ]);
  } catch (error) {
    abort.abort();
    await stop();
    throw error;
  }
  started = true;
  return { members, stop };
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
          "       [--log-level debug|info|warn|error] [--auth-token-file F] [--startup-timeout-ms MS]\n" +
          "       (the token also from BERTFORGE_AUTH_TOKEN; --auth-token T works but shows it in the process list)",
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
        onEvent: (event) => console.log(JSON.stringify(event)),
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
      pids: Object.fromEntries(fleet.members.map((m) => [m.key, m.pid])),
    }),
  );
  // From here the fleet restarts what dies and runs until a signal stops it.
}

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { client } from "../shared/rpc/client.ts";
import { healthClient } from "../shared/rpc/client.ts";
import {
  DEFAULT_RESTART_POLICY,
  freePortBase,
  portsFree,
  resolveAutoPortBase,
  restartDelay,
} from "./fleet.ts";

const REPO_ROOT = fromFileUrl(new URL("../..", import.meta.url));

/** A port base unlikely to collide with a fleet someone else runs on this machine. */
function randomPortBase(): number {
  return 20000 + Math.floor(Math.random() * 400) * 100;
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat); // a zombie is gone for our purposes
  } catch {
    return false;
  }
}

async function portOpen(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** Starts `deno task fleet` as a user would, collecting its output. */
function spawnFleet(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "services/cli/fleet.ts", ...args],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let stdout = "";
  let stderr = "";
  const reading = Promise.all([
    (async () => {
      for await (const t of child.stdout.pipeThrough(new TextDecoderStream())) stdout += t;
    })(),
    (async () => {
      for await (const t of child.stderr.pipeThrough(new TextDecoderStream())) stderr += t;
    })(),
  ]);
  return {
    child,
    output: () => ({ stdout, stderr }),
    async until(predicate: () => boolean, timeoutMs: number) {
      const end = Date.now() + timeoutMs;
      while (!predicate() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      return predicate();
    },
    reading,
  };
}

Deno.test({
  name: "fleet starts all four services healthy, answers, and Ctrl-C stops them all (no process left)",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const base = randomPortBase();
  const store = await Deno.makeTempDir();
  const fleet = spawnFleet(["--port-base", String(base), "--store", store]);
  try {
    const ready = await fleet.until(() => fleet.output().stdout.includes(`"fleet":"ready"`), 120_000);
    assert(ready, `fleet did not become ready:\n${fleet.output().stderr}`);
    const { stderr } = fleet.output();
    for (const key of ["tokenizer", "sharding", "trainer", "inference"]) {
      assertStringIncludes(stderr, `${key.padEnd(9)}| `);
    }
    const pids = [...stderr.matchAll(/listening service=\S+ address=\S+/g)].length;
    assertEquals(pids, 4, "each service logged that it listens, prefixed");
    const ready_ = JSON.parse(fleet.output().stdout.trim().split("\n").at(-1)!);
    assertEquals(ready_.services.trainer, `127.0.0.1:${base + 3}`);

    // A real call through the fleet: a service answers (UNIMPLEMENTED until its owner lands it, or a result).
    const trainer = client("TrainerService", `127.0.0.1:${base + 3}`, { retry: { maxAttempts: 1 } });
    try {
      await trainer.unary("ListModels", {}).catch((error) => {
        // Any answer from the service itself; never a transport failure.
        assert(!["UNAVAILABLE", "DEADLINE_EXCEEDED"].includes(error.code), String(error));
      });
    } finally {
      trainer.close();
    }

    const childPids = childrenOf(fleet.child.pid);
    assert(childPids.length >= 4, `four service processes under the fleet: ${childPids}`);
    fleet.child.kill("SIGINT");
    const status = await fleet.child.status;
    assertEquals(status.code, 0, fleet.output().stderr);
    await fleet.reading;
    await new Promise((r) => setTimeout(r, 200));
    for (const pid of childPids) assert(!alive(pid), `service process ${pid} is still running`);
    for (let offset = 1; offset <= 4; offset++) {
      assert(!(await portOpen(base + offset)), `port ${base + offset} still open`);
    }
  } finally {
    try {
      fleet.child.kill("SIGKILL");
    } catch { /* already stopped */ }
    await Deno.remove(store, { recursive: true });
  }
});

Deno.test({
  name: "fleet exits non-zero when a service cannot start (its port is taken), leaving nothing behind",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const base = randomPortBase();
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: base + 2 });
  const store = await Deno.makeTempDir();
  const fleet = spawnFleet(["--port-base", String(base), "--store", store, "--only", "tokenizer,sharding"]);
  try {
    const status = await fleet.child.status;
    await fleet.reading;
    assertEquals(status.code, 1, fleet.output().stderr);
    const { stderr } = fleet.output();
    assertStringIncludes(stderr, "sharding exited while starting");
    // The failure itself names the cause, for a console that shows only the fleet's own lines (the demo's).
    const failure = stderr.slice(stderr.indexOf("failed to start:"));
    assertStringIncludes(failure, "its last log lines:");
    assert(/sharding +\| .*(EADDRINUSE|in use)/i.test(failure), failure);
    assert(!(await portOpen(base + 1)), "the tokenizer that did start was stopped");
  } finally {
    blocker.close();
    await Deno.remove(store, { recursive: true });
  }
});

Deno.test("freePortBase() skips a base whose ports are taken; resolveAutoPortBase() replaces only `auto`", () => {
  const taken = randomPortBase();
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: taken + 5 });
  try {
    assert(!portsFree(taken), "the inference HTTP port of the base is taken");
    // The first draw lands on the taken base, the second on the next one up.
    const draws = [(taken - 20000) / 40000, (taken + 10 - 20000) / 40000];
    const base = freePortBase({ random: () => draws.shift() ?? Math.random() });
    assert(base !== taken, `${base} is not the taken base`);
    assert(portsFree(base), `${base} is free`);
  } finally {
    blocker.close();
  }
  assertEquals(resolveAutoPortBase(["--store", "s", "--port-base", "auto"], () => 31230), [
    "--store",
    "s",
    "--port-base",
    "31230",
  ]);
  assertEquals(resolveAutoPortBase(["--port-base=auto", "--only", "tokenizer"], () => 31230), [
    "--port-base=31230",
    "--only",
    "tokenizer",
  ]);
  assertEquals(resolveAutoPortBase(["--port-base", "50050"], () => 31230), undefined);
});

Deno.test({
  name: "fleet --port-base auto: two fleets started at once each find a free base and serve on it",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const stores = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const fleets = stores.map((store) =>
    spawnFleet(["--port-base", "auto", "--store", store, "--only", "tokenizer"])
  );
  try {
    const bases: number[] = [];
    for (const fleet of fleets) {
      const ready = await fleet.until(() => fleet.output().stdout.includes(`"fleet":"ready"`), 120_000);
      assert(ready, `fleet did not become ready:\n${fleet.output().stderr}`);
      const line = JSON.parse(fleet.output().stdout.trim().split("\n").at(-1)!);
      assertEquals(line.services.tokenizer, `127.0.0.1:${line.port_base + 1}`);
      assert(await portOpen(line.port_base + 1), `the tokenizer listens on ${line.port_base + 1}`);
      bases.push(line.port_base);
    }
    assert(bases[0] !== bases[1], `two fleets, two bases: ${bases}`);
    for (const fleet of fleets) {
      fleet.child.kill("SIGINT");
      assertEquals((await fleet.child.status).code, 0, fleet.output().stderr);
      await fleet.reading;
    }
  } finally {
    for (const fleet of fleets) {
      try {
        fleet.child.kill("SIGKILL");
      } catch { /* already stopped */ }
    }
    for (const store of stores) await Deno.remove(store, { recursive: true });
  }
});

/** The JSON lines the fleet printed on stdout. */
function events(stdout: string): Record<string, unknown>[] {
  return stdout.split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line));
}

Deno.test({
  name: "fleet restarts a service killed with SIGKILL, says so, and never stops the others",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const store = await Deno.makeTempDir();
  const fleet = spawnFleet(["--port-base", "auto", "--store", store, "--only", "tokenizer,sharding"]);
  try {
    const ready = await fleet.until(() => fleet.output().stdout.includes(`"fleet":"ready"`), 120_000);
    assert(ready, `fleet did not become ready:\n${fleet.output().stderr}`);
    const line = events(fleet.output().stdout).find((e) => e.fleet === "ready")!;
    const pids = line.pids as Record<string, number>;
    const services = line.services as Record<string, string>;
    assert(pids.tokenizer! > 0 && pids.sharding! > 0, JSON.stringify(line));

    Deno.kill(pids.sharding!, "SIGKILL");
    const back = await fleet.until(
      () => events(fleet.output().stdout).some((e) => e.fleet === "restarted" && e.service === "sharding"),
      60_000,
    );
    assert(back, `sharding was not restarted:\n${fleet.output().stderr}`);
    const died = events(fleet.output().stdout).find((e) => e.fleet === "died")!;
    assertEquals([died.service, died.pid, died.signal], ["sharding", pids.sharding, "SIGKILL"]);
    const { stderr } = fleet.output();
    assert(
      new RegExp(`sharding \\(pid ${pids.sharding}\\) died after .* killed by SIGKILL`).test(stderr),
      stderr,
    );
    assertStringIncludes(stderr, "restarting sharding in 1.0 s (restart 1)");

    const restarted = events(fleet.output().stdout).find((e) => e.fleet === "restarted")!;
    assert(restarted.pid !== pids.sharding && alive(restarted.pid as number), JSON.stringify(restarted));
    // The restarted service answers on its old address, and the tokenizer is the process it always was.
    const health = healthClient(services.sharding!, { authToken: "" });
    try {
      const { status } = await health.unary<{ status: string }>("Check", { service: "" });
      assertEquals(status, "SERVING");
    } finally {
      health.close();
    }
    assert(alive(pids.tokenizer!), "the tokenizer kept running");
    assert(
      !events(fleet.output().stdout).some((e) => e.service === "tokenizer"),
      "no event for the tokenizer",
    );

    // Ctrl-C still stops everything, the restarted process included.
    fleet.child.kill("SIGINT");
    assertEquals((await fleet.child.status).code, 0, fleet.output().stderr);
    await fleet.reading;
    await new Promise((r) => setTimeout(r, 200));
    for (const pid of [pids.tokenizer!, restarted.pid as number]) assert(!alive(pid), `${pid} still runs`);
  } finally {
    try {
      fleet.child.kill("SIGKILL");
    } catch { /* already stopped */ }
    await Deno.remove(store, { recursive: true });
  }
});

Deno.test("restartDelay() doubles the wait per death in a row up to the cap, and flags a crash loop", () => {
  const policy = { ...DEFAULT_RESTART_POLICY, initialBackoffMs: 1000, maxBackoffMs: 8000 };
  const now = 1_000_000;
  assertEquals([1, 2, 3, 4, 5].map((n) => restartDelay(n, [], now, policy).delayMs), [
    1000,
    2000,
    4000,
    8000,
    8000,
  ]);
  const fast = (n: number, apartMs: number) => Array.from({ length: n }, (_, i) => now - i * apartMs);
  assertEquals(restartDelay(4, fast(4, 1000), now, policy), { delayMs: 8000, crashLoop: false });
  assertEquals(restartDelay(5, fast(5, 1000), now, policy), { delayMs: 8000, crashLoop: true });
  // Fast failures older than the window no longer count.
  assertEquals(restartDelay(1, fast(5, policy.crashLoopWindowMs), now, policy).crashLoop, false);
});

Deno.test("fleet rejects a bad flag with exit code 2", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "services/cli/fleet.ts", "--only", "tokeniser"],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(output.code, 2);
  assertStringIncludes(new TextDecoder().decode(output.stderr), `--only must list services`);
});

/** Direct children of a process (Linux /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry.name));
    } catch { /* gone */ }
  }
  return out;
}

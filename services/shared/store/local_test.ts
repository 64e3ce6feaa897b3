import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidArgument, NotFound, Unavailable } from "../errors.ts";
import { LocalStore } from "./local.ts";
import { DEFAULT_STORE_DIR, openStore, storeSettingsFromEnv } from "./mod.ts";
import { runStoreConformance } from "./store_conformance.ts";
import { TEMP_MARKER } from "./store.ts";

Deno.test("LocalStore passes the store conformance suite", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "bertforge-store-" });
  try {
    const store = new LocalStore(dir);
    await runStoreConformance(t, store);

    await t.step("no temporary files are left behind, even after failed writes", async () => {
      const leftovers: string[] = [];
      const walk = async (path: string) => {
        for await (const entry of Deno.readDir(path)) {
          if (entry.name.includes(TEMP_MARKER)) leftovers.push(entry.name);
          if (entry.isDirectory) await walk(join(path, entry.name));
        }
      };
      await walk(dir);
      assert.deepEqual(leftovers, []);
    });

    await t.step("a key and a deeper key sharing its name conflict with a clear error", async () => {
      await store.put("conflict/a", "file");
      await assert.rejects(() => store.put("conflict/a/b", "x"), /parent prefixes is an object/);
      await store.put("conflict2/a/b", "x");
      await assert.rejects(() => store.put("conflict2/a", "x"), /folder/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("storeSettingsFromEnv follows docs/conventions.md", () => {
  assert.deepEqual(storeSettingsFromEnv(() => undefined), { dir: DEFAULT_STORE_DIR });
  const env: Record<string, string> = { BERTFORGE_STORE_DIR: "/data/store" };
  assert.deepEqual(storeSettingsFromEnv((n) => env[n]), { dir: "/data/store" });
  const s3env: Record<string, string> = {
    BERTFORGE_S3_URL: "http://minio:9000",
    BERTFORGE_S3_ACCESS_KEY: "ak",
    BERTFORGE_S3_SECRET_KEY: "sk",
  };
  assert.deepEqual(storeSettingsFromEnv((n) => s3env[n]), {
    s3: {
      url: "http://minio:9000",
      bucket: "bertforge",
      accessKey: "ak",
      secretKey: "sk",
      region: "us-east-1",
    },
  });
  delete s3env.BERTFORGE_S3_SECRET_KEY;
  assert.throws(() => storeSettingsFromEnv((n) => s3env[n]), InvalidArgument);
  assert.equal(openStore({ dir: "x" }).kind, "local");
  assert.throws(() => openStore({ s3: { url: "minio:9000", accessKey: "a", secretKey: "b" } }), /s3.url/);
});

/**
 * Makes a folder refuse new files, and undoes it. Root ignores permission bits, so as root the folder is
 * made immutable (chattr +i), which refuses even root; returns false where neither works.
 */
async function readOnly(dir: string, on: boolean): Promise<boolean> {
  if (Deno.uid() === 0) {
    const { success } = await new Deno.Command("chattr", { args: [on ? "+i" : "-i", dir], stderr: "null" })
      .output().catch(() => ({ success: false }));
    return success;
  }
  await Deno.chmod(dir, on ? 0o555 : 0o755);
  return true;
}

async function partials(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) if (entry.name.includes(TEMP_MARKER)) found.push(entry.name);
  return found;
}

Deno.test("LocalStore retries a write while its folder is read-only for a moment, then writes it", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "bertforge-store-" });
  const store = new LocalStore(root, { maxAttempts: 8, retryBaseMs: 100 });
  const dir = join(root, "jobs", "j1");
  try {
    await store.put("jobs/j1/events/000001.json", "{}");
    if (!(await readOnly(join(dir, "events"), true))) {
      await t.step({ name: "needs chattr or chmod", ignore: true, fn() {} });
      return;
    }
    const writable = setTimeout(() => readOnly(join(dir, "events"), false), 700);
    try {
      const started = Date.now();
      const info = await store.put("jobs/j1/events/000002.json", `{"seq":2}`);
      assert.equal(info.size, 9);
      assert.ok(Date.now() - started >= 600, "the write waited for the folder");
      assert.equal(await store.getText("jobs/j1/events/000002.json"), `{"seq":2}`);
    } finally {
      clearTimeout(writable);
      await readOnly(join(dir, "events"), false);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("LocalStore: a folder that stays read-only fails the write with Unavailable, nothing half-written", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "bertforge-store-" });
  const store = new LocalStore(root, { maxAttempts: 3, retryBaseMs: 10 });
  const dir = join(root, "jobs", "j1");
  try {
    await store.put("jobs/j1/spec.json", "{}");
    if (!(await readOnly(dir, true))) {
      await t.step({ name: "needs chattr or chmod", ignore: true, fn() {} });
      return;
    }
    try {
      await assert.rejects(
        () => store.put("jobs/j1/state.json", "{}"),
        (error: Error) =>
          error instanceof Unavailable &&
          /^object store .* unavailable \(create jobs\/j1\/state\.json, 3 attempts\): /.test(error.message),
      );
      // Deleting is retried the same way, and a missing key is NotFound at once, not after the backoff.
      await assert.rejects(() => store.delete("jobs/j1/spec.json"), Unavailable);
    } finally {
      await readOnly(dir, false);
    }
    assert.deepEqual(await partials(dir), []);
    assert.equal(await store.exists("jobs/j1/state.json"), false);
    const slow = new LocalStore(root, { retryBaseMs: 5000 });
    const started = Date.now();
    await assert.rejects(() => slow.delete("jobs/j1/missing.json"), NotFound);
    assert.ok(Date.now() - started < 1000, "NotFound is not retried");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("LocalStore sweeps the partial files a killed writer left, once they are old, on its first write", async () => {
  const root = await Deno.makeTempDir({ prefix: "bertforge-store-" });
  try {
    await Deno.mkdir(join(root, "models", "m", "1"), { recursive: true });
    const stale = join(root, "models", "m", "1", `model.safetensors${TEMP_MARKER}0badc0de`);
    const fresh = join(root, "models", "m", "1", `config.json${TEMP_MARKER}1234abcd`);
    await Deno.writeTextFile(stale, "half a model");
    await Deno.writeTextFile(fresh, "a write in flight in another process");
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await Deno.utime(stale, twoHoursAgo, twoHoursAgo);

    await new LocalStore(root).put("vocabs/v/vocab.txt", "[PAD]\n");
    assert.deepEqual(await partials(join(root, "models", "m", "1")), [`config.json${TEMP_MARKER}1234abcd`]);
    assert.equal(await new LocalStore(root).sweepPartials(0), 1, "sweepPartials(0) takes the young one too");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

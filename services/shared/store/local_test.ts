import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidArgument } from "../errors.ts";
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

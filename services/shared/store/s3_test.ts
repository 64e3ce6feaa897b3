import assert from "node:assert/strict";
import { Unavailable } from "../errors.ts";
import { S3Store } from "./s3.ts";
import { runStoreConformance } from "./store_conformance.ts";
import { startS3rver as startS3 } from "./testing.ts";

// minio keeps sockets alive between requests, which Deno's sanitizers would report as leaks.
const options = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "S3Store passes the store conformance suite against s3rver",
  ...options,
  fn: async (t) => {
    const s3 = await startS3();
    try {
      // The bucket does not exist yet: the store creates it on first use. The smallest part size
      // S3 allows makes the larger objects of the suite go through multipart uploads.
      const store = s3.store("conformance", 5 * 1024 * 1024);
      await runStoreConformance(t, store, {
        // A put holds a part or two (5 MiB each) in memory by design; an object many parts long shows the
        // growth is bounded by the parts, not by the object (24 MiB was within GC noise of that bound).
        largeObjectBytes: 64 * 1024 * 1024,
        serverDeviations: {
          // s3rver 3.7.1 lib/stores/filesystem.js: its walk skips folders below a common prefix, so
          // "ls/ab/c/d" yields no "ls/ab/" entry. S3 and MinIO return it.
          deepCommonPrefixes: "s3rver drops common prefixes of keys two levels deeper",
          // s3rver writes objects with fs.createWriteStream on the final path; S3 and MinIO make
          // each PUT/complete visible whole.
          concurrentSameKey: "s3rver writes objects in place, not atomically",
        },
      });

      await t.step("the SHA-256 of a single-part put is kept as object metadata", async () => {
        const info = await store.put("meta/small.txt", "hello", { contentType: "text/plain" });
        const stat = await store.stat("meta/small.txt");
        assert.equal(stat?.sha256, info.sha256);
        assert.equal(stat?.contentType, "text/plain");
      });

      await t.step("a second store on the same bucket sees the same objects", async () => {
        const other = new S3Store({
          url: s3.url,
          bucket: "conformance",
          accessKey: "S3RVER",
          secretKey: "S3RVER",
        });
        assert.equal(await other.getText("meta/small.txt"), "hello");
      });
    } finally {
      await s3.stop();
    }
  },
});

Deno.test({
  name: "S3Store retries transient failures with backoff, then reports Unavailable",
  ...options,
  fn: async () => {
    // A port that was just free: connections are refused.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const store = new S3Store({
      url: `http://127.0.0.1:${port}`,
      accessKey: "a",
      secretKey: "b",
      maxAttempts: 3,
      retryBaseMs: 50,
    });
    const started = performance.now();
    await assert.rejects(() => store.put("k", "v"), (error: unknown) => {
      assert.ok(error instanceof Unavailable, String(error));
      assert.match(error.message, /3 attempts/);
      return true;
    });
    // Two backoffs of at least 25 ms and 50 ms happened.
    assert.ok(performance.now() - started >= 75);
  },
});

Deno.test({
  name: "S3Store recovers when the server comes up during the retries",
  ...options,
  fn: async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const store = new S3Store({
      url: `http://127.0.0.1:${port}`,
      accessKey: "S3RVER",
      secretKey: "S3RVER",
      maxAttempts: 10,
      retryBaseMs: 100,
    });
    const late = new Promise((resolve) => setTimeout(resolve, 150)).then(() => startS3(port));
    try {
      await store.put("late/k", "v");
      assert.equal(await store.getText("late/k"), "v");
    } finally {
      await (await late).stop();
    }
  },
});

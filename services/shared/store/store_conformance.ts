/**
 * The behaviour every ObjectStore implementation must show, as one suite run against each backend
 * (local_test.ts: a temp folder; s3_test.ts: a real S3 server on loopback). Not a test file itself.
 */
import assert from "node:assert/strict";
import { FailedPrecondition, InvalidArgument, NotFound } from "../errors.ts";
import { Sha256, sha256 } from "./hash.ts";
import {
  ArtifactWriter,
  isPublished,
  listArtifacts,
  publish,
  readManifest,
  verifyArtifact,
} from "./publish.ts";
import type { ObjectInfo, ObjectStore } from "./store.ts";

const MiB = 1024 * 1024;

/** Deterministic pseudo-random bytes (xorshift32), so content checks do not depend on Math.random. */
function pseudoRandomBytes(length: number, seed: number, out = new Uint8Array(length)): Uint8Array {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A stream of `total` bytes made on demand in `chunk`-sized pieces. With `reuse`, every piece is the
 * same buffer refilled in place: it allocates nothing per chunk (so memory growth is the consumer's
 * own), and a consumer that keeps chunks instead of using them before pulling the next one ends up
 * with the wrong content.
 */
function generatedStream(
  total: number,
  chunk: number,
  hooks: { onPull?: (produced: number) => Promise<void> | void; failAt?: number; reuse?: boolean } = {},
): ReadableStream<Uint8Array> {
  let produced = 0;
  let seed = 7;
  const shared = hooks.reuse ? new Uint8Array(chunk) : null;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (hooks.failAt !== undefined && produced >= hooks.failAt) {
        controller.error(new Error("source failed on purpose"));
        return;
      }
      if (produced >= total) {
        controller.close();
        return;
      }
      await hooks.onPull?.(produced);
      const n = Math.min(chunk, total - produced);
      controller.enqueue(
        shared ? pseudoRandomBytes(n, seed++, shared.subarray(0, n)) : pseudoRandomBytes(n, seed++),
      );
      produced += n;
    },
  }, { highWaterMark: 0 });
}

async function drain(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function collect(iterable: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of iterable) out.push(info);
  return out;
}

export interface ConformanceOptions {
  /** Size of the large streamed object. @default 24 MiB */
  largeObjectBytes?: number;
  /**
   * Checks the test server cannot pass although the real backend does, each with the reason; they
   * are skipped (and reported as ignored steps) instead of being weakened.
   */
  serverDeviations?: {
    /** The server loses common prefixes whose objects sit two or more levels deeper. */
    deepCommonPrefixes?: string;
    /** The server writes an object in place, so concurrent writers to one key interleave. */
    concurrentSameKey?: string;
  };
}

/**
 * Runs every conformance check as a step of `t` against `store`, each under its own key prefix so the
 * steps do not see one another's objects.
 */
export async function runStoreConformance(
  t: Deno.TestContext,
  store: ObjectStore,
  options: ConformanceOptions = {},
): Promise<void> {
  const large = options.largeObjectBytes ?? 24 * MiB;
  const deviations = options.serverDeviations ?? {};

  await t.step("put then get returns the bytes, with size and sha256 computed while writing", async () => {
    const bytes = pseudoRandomBytes(100_003, 1);
    const info = await store.put("basic/bytes.bin", bytes);
    assert.equal(info.key, "basic/bytes.bin");
    assert.equal(info.size, bytes.length);
    assert.equal(info.sha256, await sha256(bytes));
    assert.deepEqual(await store.get("basic/bytes.bin"), bytes);

    const text = "你好，BERT! ünïcödé\n";
    const textInfo = await store.put("basic/text.txt", text, { contentType: "text/plain" });
    assert.equal(textInfo.size, new TextEncoder().encode(text).length);
    assert.equal(await store.getText("basic/text.txt"), text);

    const streamed = await store.put("basic/stream.bin", generatedStream(70_000, 4096));
    assert.equal(streamed.size, 70_000);
    assert.equal(streamed.sha256, await sha256(generatedStream(70_000, 4096)));

    const empty = await store.put("basic/empty", new Uint8Array(0));
    assert.equal(empty.size, 0);
    assert.deepEqual(await store.get("basic/empty"), new Uint8Array(0));
  });

  await t.step("putJson/getJson round-trip; getJson of non-JSON is FailedPrecondition", async () => {
    const value = { name: "zh", sizes: [1, 2, 3], nested: { ok: true } };
    await store.putJson("json/a.json", value);
    assert.deepEqual(await store.getJson("json/a.json"), value);
    await store.put("json/broken.json", "{not json");
    await assert.rejects(() => store.getJson("json/broken.json"), FailedPrecondition);
  });

  await t.step("stat and exists report presence; stat of a missing key is null", async () => {
    await store.put("stat/x.bin", pseudoRandomBytes(1234, 2));
    const info = await store.stat("stat/x.bin");
    assert.ok(info);
    assert.equal(info.size, 1234);
    assert.ok(info.lastModified instanceof Date);
    assert.equal(await store.stat("stat/missing.bin"), null);
    assert.equal(await store.exists("stat/x.bin"), true);
    assert.equal(await store.exists("stat/missing.bin"), false);
    // A prefix is not an object.
    assert.equal(await store.stat("stat"), null);
  });

  await t.step("missing objects are NotFound for get, getText, getJson, getStream, delete", async () => {
    await assert.rejects(() => store.get("nf/nothing"), NotFound);
    await assert.rejects(() => store.getText("nf/nothing"), NotFound);
    await assert.rejects(() => store.getJson("nf/nothing"), NotFound);
    await assert.rejects(() => store.getStream("nf/nothing"), NotFound);
    await assert.rejects(() => store.delete("nf/nothing"), NotFound);
  });

  await t.step("malformed keys are InvalidArgument for every operation", async () => {
    const bad = [
      "",
      "/abs/key",
      "a/../b",
      "..",
      "a/./b",
      "a//b",
      "trailing/",
      "tab\there",
      "nul\u0000",
      "del\u007f",
      "back\\slash",
      "x".repeat(1025),
    ];
    for (const key of bad) {
      await assert.rejects(() => store.put(key, "x"), InvalidArgument, `put ${JSON.stringify(key)}`);
      await assert.rejects(() => store.get(key), InvalidArgument, `get ${JSON.stringify(key)}`);
      await assert.rejects(() => store.stat(key), InvalidArgument, `stat ${JSON.stringify(key)}`);
      await assert.rejects(() => store.delete(key), InvalidArgument, `delete ${JSON.stringify(key)}`);
      await assert.rejects(() => store.getStream(key), InvalidArgument, `getStream ${JSON.stringify(key)}`);
    }
    await assert.rejects(() => collect(store.list("../")), InvalidArgument);
    await assert.rejects(() => collect(store.list("/abs")), InvalidArgument);
    // The error names the problem.
    await assert.rejects(() => store.put("a/../b", "x"), /'\.\.' segment/);
  });

  await t.step("ranged reads return exactly the requested bytes, cut at the end", async () => {
    const bytes = pseudoRandomBytes(300_000, 3);
    await store.put("range/r.bin", bytes);
    assert.deepEqual(await drain(await store.getStream("range/r.bin")), bytes);
    assert.deepEqual(
      await drain(await store.getStream("range/r.bin", { offset: 1000, length: 5000 })),
      bytes.subarray(1000, 6000),
    );
    assert.deepEqual(
      await drain(await store.getStream("range/r.bin", { offset: 299_990 })),
      bytes.subarray(299_990),
    );
    assert.deepEqual(
      await drain(await store.getStream("range/r.bin", { offset: 299_000, length: 10_000 })),
      bytes.subarray(299_000),
    );
    assert.equal((await drain(await store.getStream("range/r.bin", { offset: 10, length: 0 }))).length, 0);
    assert.equal((await drain(await store.getStream("range/r.bin", { offset: 300_000 }))).length, 0);
    await assert.rejects(() => store.getStream("range/r.bin", { offset: 300_001 }), InvalidArgument);
    await assert.rejects(() => store.getStream("range/r.bin", { offset: -1 }), InvalidArgument);
    await assert.rejects(() => store.getStream("range/r.bin", { length: 1.5 }), InvalidArgument);
  });

  await t.step("a cancelled read stream releases the object", async () => {
    await store.put("range/cancel.bin", pseudoRandomBytes(2 * MiB, 4));
    const reader = (await store.getStream("range/cancel.bin")).getReader();
    const first = await reader.read();
    assert.ok(first.value && first.value.length > 0);
    await reader.cancel();
    // Still readable, deletable (on Windows an open handle would block the delete).
    await store.delete("range/cancel.bin");
    assert.equal(await store.exists("range/cancel.bin"), false);
  });

  await t.step("list yields keys in byte order, recursively or one level with prefix entries", async () => {
    const keys = ["ls/b", "ls/a/z", "ls/a.txt", "ls/a-b", "ls/ab/c/d", "ls/a/y", "ls/Z", "ls/é", "ls/中"];
    for (const key of [...keys].reverse()) await store.put(key, key);
    const recursive = (await collect(store.list("ls/", { recursive: true }))).map((i) => i.key);
    assert.deepEqual(recursive, [
      "ls/Z",
      "ls/a-b",
      "ls/a.txt",
      "ls/a/y",
      "ls/a/z",
      "ls/ab/c/d",
      "ls/b",
      "ls/é",
      "ls/中",
    ]);
    const sizes = await collect(store.list("ls/a/", { recursive: true }));
    assert.deepEqual(sizes.map((i) => [i.key, i.size]), [["ls/a/y", 6], ["ls/a/z", 6]]);

    // A prefix may end inside a segment, as in S3.
    const partial = (await collect(store.list("ls/a", { recursive: true }))).map((i) => i.key);
    assert.deepEqual(partial, ["ls/a-b", "ls/a.txt", "ls/a/y", "ls/a/z", "ls/ab/c/d"]);
    assert.deepEqual(await collect(store.list("ls/nothing/")), []);
    assert.deepEqual(await collect(store.list("no-such-top/", { recursive: true })), []);
  });

  await t.step({
    name: "a one-level list shows each deeper level once, as a prefix entry" +
      (deviations.deepCommonPrefixes ? ` (skipped: ${deviations.deepCommonPrefixes})` : ""),
    ignore: deviations.deepCommonPrefixes !== undefined,
    fn: async () => {
      const level = await collect(store.list("ls/"));
      assert.deepEqual(level.map((i) => [i.key, i.isPrefix ?? false]), [
        ["ls/Z", false],
        ["ls/a-b", false],
        ["ls/a.txt", false],
        ["ls/a/", true],
        ["ls/ab/", true],
        ["ls/b", false],
        ["ls/é", false],
        ["ls/中", false],
      ]);
    },
  });

  await t.step("delete and deletePrefix remove objects and leave no empty prefixes", async () => {
    for (const key of ["del/x/1", "del/x/2", "del/x/deep/3", "del/keep"]) await store.put(key, "v");
    assert.equal(await store.deletePrefix("del/x/"), 3);
    assert.deepEqual((await collect(store.list("del/"))).map((i) => i.key), ["del/keep"]);
    await store.delete("del/keep");
    assert.deepEqual(await collect(store.list("del/", { recursive: true })), []);
    assert.ok(!(await collect(store.list(""))).some((i) => i.key === "del/"), "no empty prefix left behind");
    await assert.rejects(() => store.deletePrefix("del/x"), InvalidArgument);
  });

  await t.step(
    `a ${Math.round(large / MiB)} MiB stream is written and read without buffering it`,
    async () => {
      const chunk = 64 * 1024;
      const baseline = Deno.memoryUsage().rss;
      let peak = 0;
      const watch = () => {
        peak = Math.max(peak, Deno.memoryUsage().rss - baseline);
      };
      const info = await store.put(
        "large/big.bin",
        generatedStream(large, chunk, { onPull: watch, reuse: true }),
      );
      assert.equal(info.size, large);
      assert.equal(info.sha256, await sha256(generatedStream(large, chunk)));
      // Writing: the source allocates nothing per chunk, so growth here is what put itself holds.
      assert.ok(peak < large / 2, `writing grew memory by ${peak} bytes for a ${large}-byte object`);

      // Reading: the object arrives as many bounded chunks, not as one buffer built up front.
      const hasher = new Sha256();
      let chunks = 0;
      let biggest = 0;
      for await (const piece of await store.getStream("large/big.bin")) {
        hasher.update(piece);
        chunks++;
        biggest = Math.max(biggest, piece.byteLength);
      }
      assert.equal(hasher.bytes, large);
      assert.equal(hasher.hex(), info.sha256);
      assert.ok(
        chunks >= 8 && biggest <= 4 * MiB,
        `read came in ${chunks} chunks, the biggest ${biggest} bytes`,
      );
      // A range deep inside the large object.
      const tail = await drain(
        await store.getStream("large/big.bin", { offset: large - 100_000, length: 1000 }),
      );
      const whole = await drain(generatedStream(large, chunk));
      assert.deepEqual(tail, whole.subarray(large - 100_000, large - 99_000));
      await store.delete("large/big.bin");
    },
  );

  await t.step("a put whose source fails leaves the old object whole and no new object", async () => {
    await store.put("atomic/kept", "old version");
    await assert.rejects(
      () => store.put("atomic/kept", generatedStream(7 * MiB, 256 * 1024, { failAt: 6 * MiB })),
      /failed on purpose/,
    );
    assert.equal(await store.getText("atomic/kept"), "old version");
    await assert.rejects(
      () => store.put("atomic/new", generatedStream(1 * MiB, 64 * 1024, { failAt: 512 * 1024 })),
      /failed on purpose/,
    );
    assert.equal(await store.exists("atomic/new"), false);
    assert.deepEqual((await collect(store.list("atomic/", { recursive: true }))).map((i) => i.key), [
      "atomic/kept",
    ]);
  });

  await t.step("while a put streams, readers see the old object, never a partial one", async () => {
    await store.put("atomic/live", "v1");
    let release!: () => void;
    const halfway = Promise.withResolvers<void>();
    const gate = new Promise<void>((resolve) => (release = resolve));
    const writing = store.put(
      "atomic/live",
      generatedStream(3 * MiB, 256 * 1024, {
        onPull: async (produced) => {
          if (produced === 1 * MiB) {
            halfway.resolve();
            await gate;
          }
        },
      }),
    );
    await halfway.promise;
    assert.equal(await store.getText("atomic/live"), "v1");
    assert.equal((await store.stat("atomic/live"))?.size, 2);
    release();
    const info = await writing;
    assert.equal((await store.stat("atomic/live"))?.size, 3 * MiB);
    assert.equal(await sha256(await store.get("atomic/live")), info.sha256);
  });

  await t.step({
    name: "concurrent writers to one key end with exactly one writer's whole object" +
      (deviations.concurrentSameKey ? ` (skipped: ${deviations.concurrentSameKey})` : ""),
    ignore: deviations.concurrentSameKey !== undefined,
    fn: async () => {
      const writers = 4;
      const size = 6 * MiB; // above the S3 part size used in tests, so multipart uploads race too
      const contents = Array.from({ length: writers }, (_, w) => new Uint8Array(size).fill(w + 1));
      const infos = await Promise.all(contents.map((bytes) => {
        // Small chunks interleave the writers.
        let at = 0;
        const stream = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (at >= bytes.length) return controller.close();
            controller.enqueue(bytes.slice(at, at + 512 * 1024));
            at += 512 * 1024;
          },
        });
        return store.put("race/key", stream);
      }));
      const final = await store.get("race/key");
      assert.equal(final.length, size);
      const winner = final[0];
      assert.ok(winner >= 1 && winner <= writers);
      assert.ok(final.every((b) => b === winner), "the object mixes bytes of several writers");
      assert.equal(await sha256(final), infos[winner - 1].sha256);
      assert.deepEqual((await collect(store.list("race/", { recursive: true }))).map((i) => i.key), [
        "race/key",
      ]);
    },
  });

  await t.step("publish writes parts then a manifest listing sizes and sha256", async () => {
    const vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n你\n好\n";
    const manifest = await publish(store, "vocabs/zh", {
      "vocab.txt": vocab,
      "tokenizer.json": JSON.stringify({ version: "1.0" }),
      "extra/notes.bin": generatedStream(10_000, 1000),
    }, { metadata: { corpus: "corpora/poems", size: 7 } });
    assert.equal(manifest.prefix, "vocabs/zh");
    assert.deepEqual(manifest.parts.map((p) => p.name), ["extra/notes.bin", "tokenizer.json", "vocab.txt"]);
    const vocabPart = manifest.parts.find((p) => p.name === "vocab.txt")!;
    assert.equal(vocabPart.size, new TextEncoder().encode(vocab).length);
    assert.equal(vocabPart.sha256, await sha256(vocab));
    assert.equal(await isPublished(store, "vocabs/zh"), true);
    assert.equal(await isPublished(store, "vocabs/zh/"), true);
    assert.deepEqual(await readManifest(store, "vocabs/zh"), manifest);
    assert.deepEqual((await verifyArtifact(store, "vocabs/zh")).metadata, {
      corpus: "corpora/poems",
      size: 7,
    });
    await assert.rejects(() => publish(store, "vocabs/zh", { "vocab.txt": "x" }), /already published/);
    // Tampering is caught by verification.
    await store.put("vocabs/zh/vocab.txt", vocab + "extra\n");
    await assert.rejects(() => verifyArtifact(store, "vocabs/zh"), FailedPrecondition);
    const replaced = await publish(store, "vocabs/zh", { "vocab.txt": "a\n" }, { overwrite: true });
    assert.deepEqual(replaced.parts.map((p) => p.name), ["vocab.txt"]);
    assert.deepEqual((await collect(store.list("vocabs/zh/", { recursive: true }))).map((i) => i.key), [
      "vocabs/zh/MANIFEST.json",
      "vocabs/zh/vocab.txt",
    ]);
  });

  await t.step("an interrupted publish (parts written, no manifest) is invisible", async () => {
    const writer = await ArtifactWriter.begin(store, "shards/half");
    await writer.put("00000.bin", pseudoRandomBytes(50_000, 5));
    await writer.put("00001.bin", pseudoRandomBytes(50_000, 6));
    // The process "dies" here: no commit.
    assert.equal(await isPublished(store, "shards/half"), false);
    await assert.rejects(() => readManifest(store, "shards/half"), NotFound);
    await assert.rejects(() => readManifest(store, "shards/half"), /not found/);
    await publish(store, "shards/whole", { "00000.bin": "x" });
    assert.deepEqual(await listArtifacts(store, "shards/"), ["shards/whole"]);

    // A publish whose part fails cleans up after itself.
    await assert.rejects(
      () =>
        publish(store, "shards/failing", {
          "00000.bin": "ok",
          "00001.bin": generatedStream(100_000, 10_000, { failAt: 50_000 }),
        }),
      /failed on purpose/,
    );
    assert.equal(await isPublished(store, "shards/failing"), false);
    assert.deepEqual(await collect(store.list("shards/failing/", { recursive: true })), []);
  });
}

import { assert, assertEquals, assertRejects } from "@std/assert";
import { loadSettings } from "../shared/config/mod.ts";
import { AlreadyExists, InvalidArgument, NotFound } from "../shared/errors.ts";
import { client, type Message } from "../shared/rpc/mod.ts";
import { LocalStore } from "../shared/store/local.ts";
import { publish } from "../shared/store/publish.ts";
import { start } from "./main.ts";

const POETRY = new URL(
  "../../node_modules/chinese-poetry/dist/quantangshi/poet.tang.0.json",
  import.meta.url,
);

/** A sharding service on a free loopback port over a fresh store holding a poem corpus and its vocab. */
async function withService(fn: (rpc: ReturnType<typeof client>, store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "bf-sharding-svc-" });
  const store = new LocalStore(dir);
  const poems = JSON.parse(await Deno.readTextFile(POETRY)) as { paragraphs: string[] }[];
  const documents = poems.map((p) => p.paragraphs.join("\n"));
  await publish(store, "corpora/poems", { "part-0.txt": documents.join("\n\n") });
  const chars = [...new Set([...documents.join("").replace(/\s/g, "")])].sort();
  await publish(store, "vocabs/chars", {
    "vocab.txt": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ...chars].join("\n"),
    "tokenizer_config.json": JSON.stringify({ do_lower_case: true }),
  });
  const settings = loadSettings("sharding", {
    args: ["--port", "0", "--store", dir, "--threads", "1", "--log-level", "warn"],
    env: () => undefined,
  });
  const server = await start(settings);
  const rpc = client("ShardingService", server.address, { defaultDeadlineMs: 120_000 });
  try {
    await fn(rpc, store);
  } finally {
    rpc.close();
    await server.shutdown("test done");
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function watchToEnd(rpc: ReturnType<typeof client>, jobId: string): Promise<Message[]> {
  const events: Message[] = [];
  for await (const response of rpc.serverStream("WatchJob", { job_id: jobId })) events.push(response.event);
  return events;
}

Deno.test({
  name: "ShardingService builds, lists, describes and inspects a shard set over gRPC",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withService(async (rpc) => {
      const { job } = await rpc.unary("StartBuildPretraining", {
        name: "poems-64",
        corpus: "poems",
        vocab: "chars",
        max_seq_length: 64,
        dupe_factor: 2,
        eval_fraction: 0.1,
      });
      assertEquals(job.kind, "build_pretraining");
      assert(["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"].includes(job.state), job.state);
      const events = await watchToEnd(rpc, job.id);
      assertEquals(events.at(-1)!.state, "JOB_STATE_SUCCEEDED", JSON.stringify(events.at(-1)));
      assert(
        events.some((e) => e.type === "JOB_EVENT_TYPE_PROGRESS" && e.unit === "bytes" && Number(e.step) > 0),
      );
      assert(events.some((e) => e.type === "JOB_EVENT_TYPE_ARTIFACT" && e.artifact?.name === "poems-64"));

      const done = (await rpc.unary("GetJob", { job_id: job.id })).job;
      assertEquals([done.state, done.outputs[0].kind, done.outputs[0].name], [
        "JOB_STATE_SUCCEEDED",
        "ARTIFACT_KIND_SHARDS",
        "poems-64",
      ]);
      const listed = await rpc.unary("ListJobs", {});
      assert(listed.jobs.some((j: Message) => j.id === job.id));

      const { shard_sets, page } = await rpc.unary("ListShards", { page: { page_size: 1 } });
      assertEquals(shard_sets.map((s: Message) => s.name), ["poems-64"]);
      assertEquals(page, { next_page_token: "", total_size: 1 });
      await assertRejects(
        () => rpc.unary("ListShards", { page: { page_token: "-1" } }),
        InvalidArgument,
        "page.page_token",
      );
      const { shard_set, manifest_json } = await rpc.unary("GetShards", { name: "poems-64" });
      const manifest = JSON.parse(manifest_json);
      assertEquals([shard_set.max_seq_length, shard_set.id_bytes, shard_set.vocab], [64, 2, "chars"]);
      assertEquals(Number(shard_set.instances), manifest.instances);
      assert(Number(shard_set.eval_instances) > 0);
      // Unset fields take the proto's defaults.
      assertEquals([manifest.settings.maskedLmProb, manifest.settings.shortSeqProb, manifest.settings.seed], [
        0.15,
        0.1,
        12345,
      ]);
      assertEquals(manifest.settings.maxPredictionsPerSeq, 10);
      assertEquals(shard_set.lineage.inputs.map((i: Message) => i.role), ["corpus", "vocab"]);

      const { instances } = await rpc.unary("InspectShards", { name: "poems-64", count: 3, offset: 2 });
      assertEquals(instances.map((x: Message) => Number(x.index)), [2, 3, 4]);
      for (const x of instances) {
        assertEquals(x.tokens[0], "[CLS]");
        assertEquals(x.tokens.at(-1), "[SEP]");
        assertEquals(x.segment_ids.length, x.tokens.length);
        assertEquals(x.masked_tokens.length, x.masked_positions.length);
        assert(x.masked_positions.length >= 1);
      }
      const held = await rpc.unary("InspectShards", { name: "poems-64", eval_split: true });
      assertEquals(held.instances.length, 5);

      await assertRejects(
        () => rpc.unary("StartBuildPretraining", { name: "poems-64", corpus: "poems", vocab: "chars" }),
        AlreadyExists,
      );
      await assertRejects(
        () => rpc.unary("StartBuildPretraining", { name: "x", corpus: "poems", vocab: "nope" }),
        NotFound,
        "vocab 'nope'",
      );
      await assertRejects(
        () => rpc.unary("StartBuildPretraining", { name: "x", corpus: "nothing", vocab: "chars" }),
        NotFound,
        "corpus",
      );
      await assertRejects(
        () =>
          rpc.unary("StartBuildPretraining", {
            name: "x",
            corpus: "poems",
            vocab: "chars",
            masked_lm_prob: 1.5,
          }),
        InvalidArgument,
        "masked_lm_prob",
      );
      await assertRejects(() => rpc.unary("GetShards", { name: "missing" }), NotFound);
      await assertRejects(
        () => rpc.unary("InspectShards", { name: "poems-64", count: 500 }),
        InvalidArgument,
        "count",
      );
    }),
});

Deno.test({
  name: "ShardingService CancelJob stops a build and leaves no shard set",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withService(async (rpc, store) => {
      const text = await store.getText("corpora/poems/part-0.txt");
      await publish(store, "corpora/big", { "part-0.txt": Array(20).fill(text).join("\n\n") });
      const { job } = await rpc.unary("StartBuildPretraining", {
        name: "big",
        corpus: "big",
        vocab: "chars",
        dupe_factor: 20,
      });
      // Wait until it runs, then cancel.
      for (let i = 0; i < 200; i++) {
        const state = (await rpc.unary("GetJob", { job_id: job.id })).job.state;
        if (state === "JOB_STATE_RUNNING") break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await rpc.unary("CancelJob", { job_id: job.id });
      const events = await watchToEnd(rpc, job.id);
      assertEquals(events.at(-1)!.state, "JOB_STATE_CANCELLED");
      await assertRejects(() => rpc.unary("GetShards", { name: "big" }), NotFound);
      assertEquals(await Array.fromAsync(store.list("shards/big/", { recursive: true })), []);
    }),
});

Deno.test({
  name: "ShardingService refuses path-like names with INVALID_ARGUMENT naming the field and the rule",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withService(async (rpc, store) => {
      const ok = { name: "fine", corpus: "poems", vocab: "chars" };
      for (const bad of ["..", "a/../b", "a..b", "/", ".hidden", "a\\b", "a//b", ""]) {
        for (const field of ["name", "corpus", "vocab"] as const) {
          await assertRejects(
            () => rpc.unary("StartBuildPretraining", { ...ok, [field]: bad }),
            InvalidArgument,
            `${field} must be 1-128 characters of letters, digits, '-', '_' or '.', not starting with '.' and with no '..': got ${
              JSON.stringify(bad)
            }`,
          );
        }
        await assertRejects(() => rpc.unary("GetShards", { name: bad }), InvalidArgument, "name must be");
        await assertRejects(() => rpc.unary("InspectShards", { name: bad }), InvalidArgument, "name must be");
      }
      assertEquals((await rpc.unary("ListJobs", {})).jobs, []);
      assertEquals(await Array.fromAsync(store.list("shards/", { recursive: true })), []);
    }),
});

Deno.test({
  name: "ShardingService builds from weighted sources and reports each in events, manifest and lineage",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withService(async (rpc, store) => {
      // A second corpus, stored gzipped as an upload of a .txt.gz keeps it.
      const poems = JSON.parse(await Deno.readTextFile(POETRY)) as { paragraphs: string[] }[];
      const text = poems.slice(0, 100).map((p) => p.paragraphs.join("\n")).join("\n\n");
      const gz = new Uint8Array(
        await new Response(new Blob([text]).stream().pipeThrough(new CompressionStream("gzip")))
          .arrayBuffer(),
      );
      await publish(store, "corpora/few", { "few.txt.gz": gz });
      const bad = (request: Message, message: string) =>
        assertRejects(
          () => rpc.unary("StartBuildPretraining", { name: "mix", vocab: "chars", ...request }),
          InvalidArgument,
          message,
        );
      await bad({ corpus: "poems", sources: [{ corpus: "few" }] }, "corpus and sources are both set");
      await bad(
        { sources: [{ corpus: "few", weight: -2 }] },
        "sources[0].weight must be a number in [0, 1000]",
      );
      await bad({ sources: [{ corpus: "few" }, { corpus: "../x" }] }, "sources[1].corpus");
      await bad({ sources: [{ corpus: "few", weight: 0 }] }, "every weight is 0");
      await bad({ sources: [{ corpus: "few" }, { corpus: "few" }] }, "given twice");
      await assertRejects(
        () =>
          rpc.unary("StartBuildPretraining", { name: "mix", vocab: "chars", sources: [{ corpus: "nope" }] }),
        NotFound,
        "corpus 'nope' not found",
      );

      const { job } = await rpc.unary("StartBuildPretraining", {
        name: "mix",
        vocab: "chars",
        sources: [{ corpus: "poems", weight: 0.5 }, { corpus: "few" }],
        max_seq_length: 32,
        dupe_factor: 1,
        packed: true,
      });
      const events = await watchToEnd(rpc, job.id);
      assertEquals(events.at(-1)!.state, "JOB_STATE_SUCCEEDED", JSON.stringify(events.at(-1)));
      const perSource = events.filter((e) => e.metrics && "documents_used" in e.metrics);
      assertEquals(perSource.map((e) => e.message.split(" ")[1]), ["poems", "few"]);

      const { shard_set, manifest_json } = await rpc.unary("GetShards", { name: "mix" });
      const manifest = JSON.parse(manifest_json);
      assertEquals(manifest.settings.packed, true);
      assertEquals(shard_set.packed, true);
      const [half, few] = manifest.sources;
      assertEquals([half.name, half.weight, few.name, few.weight], ["poems", 0.5, "few", 1]);
      // The share is rounded for the training and the held-out documents each.
      assert(
        Math.abs(half.documentsUsed - half.documents / 2) <= 1,
        `${half.documentsUsed} of ${half.documents}`,
      );
      assertEquals(few.documents, 100);
      assertEquals(few.bytes, gz.byteLength);
      assertEquals(half.instances + few.instances, manifest.instances);
      assertEquals(perSource[1]!.metrics.instances, few.instances);
      assertEquals(
        shard_set.sources.map((s: Message) => [s.corpus, Number(s.instances)]),
        [["poems", half.instances], ["few", few.instances]],
      );
      assertEquals(
        shard_set.lineage.inputs.filter((i: Message) => i.role === "corpus").map((i: Message) =>
          i.ref.sha256
        ),
        [half.sha256, few.sha256],
      );
      // Packed rows: one segment, no NSP label.
      const { instances } = await rpc.unary("InspectShards", { name: "mix", count: 3 });
      for (const x of instances) {
        assertEquals(x.tokens.length, 32);
        assertEquals(x.is_random_next, false);
        assert(x.segment_ids.every((t: number) => t === 0));
      }
    }),
});

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { NotFound } from "../shared/errors.ts";
import { type Message, receiveUpload, serve } from "../shared/rpc/mod.ts";
import { artifactNameFromPath, run, serviceOfJob } from "./bertctl.ts";
import type { Output } from "./ui.ts";

const REPO_ROOT = fromFileUrl(new URL("../..", import.meta.url));
const quiet = { handleSignals: false, port: 0 } as const;

/** Runs bertctl in-process, capturing what it prints. */
async function bertctl(args: string[]) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const json = args.includes("--json");
  const out: Output = {
    json,
    tty: false,
    line: (text) => stdout.push(text),
    jsonLine: (value) => stdout.push(JSON.stringify(value)),
    note: (text) => stderr.push(text),
  };
  const code = await run(args, out);
  return { code, stdout: stdout.join("\n"), stderr: stderr.join("\n") };
}

Deno.test("bertctl usage errors exit 2 and name the problem", async () => {
  const cases: [string[], string][] = [
    [["frobnicate"], `unknown command "frobnicate"`],
    [["vocab", "train", "--corpus", "c", "--name", "v"], "--size is required"],
    [["vocab", "train", "--corpus", "c", "--name", "v", "--size", "ten"], "--size must be an integer"],
    [
      [
        "train",
        "finetune",
        "--base",
        "m",
        "--task",
        "poetry",
        "--train",
        "t",
        "--epochs",
        "1",
        "--name",
        "x",
      ],
      "--task must be one of",
    ],
    [[
      "train",
      "pretrain",
      "--shards",
      "s",
      "--arch",
      "bert-huge",
      "--steps",
      "1",
      "--batch",
      "1",
      "--name",
      "m",
    ], "--arch must be"],
    ...[["classify", "max", "--pooling must be cls or mean: got 'max'"], [
      "ner",
      "mean",
      "--pooling goes with",
    ]].map((
      [task, pooling, message],
    ): [string[], string] => [
      ["train", "finetune", "--base", "m", "--task", task!, "--train", "t", "--epochs", "1", "--name", "x"]
        .concat(["--pooling", pooling!]),
      message!,
    ]),
    [["tokenize", "--vocab", "v"], "give exactly one of --text or --file"],
    [["tokenize", "--vocab", "v", "--text", "x", "--bogus"], "unknown flag --bogus"],
    [["models", "export", "m", "--format", "tflite", "--out", "/tmp/x"], "--format must be hf or onnx"],
    [["jobs", "watch"], "give the job id"],
    [["predict", "--model", "m", "--text", "t", "--port-base", "99999"], "--port-base"],
  ];
  for (const [args, message] of cases) {
    const result = await bertctl(args);
    assertEquals(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assertStringIncludes(result.stderr, message);
  }
  assertEquals((await bertctl([])).code, 2);
  assertEquals((await bertctl(["--help"])).code, 0);
});

Deno.test("bertctl refuses a job setting out of its limits before sending anything (no wrapping, no NaN)", async () => {
  const submitted: Message[] = [];
  const server = await serve({
    ...quiet,
    service: "TrainerService",
    handlers: {
      SubmitJob: (request) => {
        submitted.push(request);
        return {
          job: { id: "20261208010000000-pretrain-abc123", kind: "pretrain", state: "JOB_STATE_QUEUED" },
        };
      },
      Evaluate: (request) => {
        submitted.push(request);
        return { metrics: {} };
      },
    },
  });
  const pretrain = ["train", "pretrain", "--shards", "s", "--arch", "bert-mini", "--name", "m"];
  const finetune = ["train", "finetune", "--base", "b", "--task", "classify", "--train", "t", "--name", "f"];
  const cases: [string[], string][] = [
    // 1e12 steps wrapped to 3,567,587,328 in the uint32 field, and bertctl exited 0.
    [
      [...pretrain, "--steps", "1000000000000"],
      '--steps must be an integer in [1, 10000000]: got "1000000000000"',
    ],
    [[...pretrain, "--steps", "1e12"], '--steps must be an integer in [1, 10000000]: got "1e12"'],
    [[...pretrain, "--steps", "abc"], '--steps must be an integer in [1, 10000000]: got "abc"'],
    [
      [...pretrain, "--steps", "10", "--batch", "100000"],
      '--batch must be an integer in [1, 4096]: got "100000"',
    ],
    [
      [...pretrain, "--steps", "10", "--grad-accum", "1000000000"],
      "--grad-accum must be an integer in [1, 1024]",
    ],
    [[...pretrain, "--steps", "10", "--lr", "nan"], '--lr must be a number: got "nan"'],
    [[...pretrain, "--steps", "10", "--lr", "1e308"], '--lr must be a number in (0, 1]: got "1e308"'],
    [[...pretrain, "--steps", "10", "--lr=-0.001"], '--lr must be a number in (0, 1]: got "-0.001"'],
    [[...pretrain, "--steps", "10", "--seed", "4294967296"], "--seed must be an integer in [0, 4294967295]"],
    [[...finetune, "--epochs", "4294967295"], '--epochs must be an integer in [1, 1000]: got "4294967295"'],
    [[...finetune, "--max-length", "1"], '--max-length must be an integer in [8, 8192]: got "1"'],
    [[...finetune, "--lr", "Infinity"], '--lr must be a number: got "Infinity"'],
    [
      ["eval", "--model", "m", "--task", "classify", "--data", "d", "--batch", "0"],
      "--batch must be an integer in [1, 4096]",
    ],
  ];
  try {
    for (const [args, message] of cases) {
      const detach = args[0] === "train" ? ["--detach"] : []; // eval always waits for its answer
      const result = await bertctl([...args, ...detach, "--trainer-addr", server.address]);
      assertEquals(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assertStringIncludes(result.stderr, message);
    }
    assertEquals(submitted, [], "a usage error sends nothing");
    assertEquals(
      (await bertctl([
        ...pretrain,
        "--steps",
        "10000000",
        "--lr",
        "1",
        "--detach",
        "--trainer-addr",
        server.address,
      ])).code,
      0,
    );
    assertEquals([submitted[0]!.pretrain.steps, submitted[0]!.pretrain.learning_rate], ["10000000", 1]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("bertctl prints '<command> is not available yet' for an unimplemented service, and names an unreachable one", async () => {
  const server = await serve({ ...quiet, service: "TrainerService", handlers: {} });
  try {
    const result = await bertctl(["--trainer-addr", server.address, "models", "list"]);
    assertEquals(result.code, 1);
    assertStringIncludes(result.stderr, "models list is not available yet");
  } finally {
    await server.shutdown();
  }
  const unreachable = await bertctl(["vocab", "list", "--tokenizer-addr", `127.0.0.1:${server.port}`]);
  assertEquals(unreachable.code, 1);
  assertStringIncludes(unreachable.stderr, "cannot reach the tokenizer service");
  assertStringIncludes(unreachable.stderr, "deno task fleet");
});

Deno.test("bertctl vocab train uploads a local corpus, starts the job, follows it to success", async () => {
  const calls: Message[] = [];
  let uploaded = "";
  const server = await serve({
    ...quiet,
    service: "TokenizerService",
    handlers: {
      UploadCorpus: async (requests) => {
        const upload = await receiveUpload(requests);
        for await (const file of upload.files()) uploaded += await new Response(file.stream).text();
        calls.push({ upload: upload.header.name });
        return { corpus: { name: upload.header.name } };
      },
      StartTrainVocab: (request) => {
        calls.push({ start: request });
        return { job: { id: "vocab-7", kind: "train_vocab", state: "JOB_STATE_RUNNING" } };
      },
      WatchJob: async function* ({ job_id }) {
        yield {
          event: { job_id, seq: 1, type: "JOB_EVENT_TYPE_PROGRESS", step: 50, total: 100, unit: "bytes" },
        };
        yield { event: { job_id, seq: 2, type: "JOB_EVENT_TYPE_STATE", state: "JOB_STATE_SUCCEEDED" } };
      },
      GetJob: ({ job_id }) => ({
        job: { id: job_id, state: "JOB_STATE_SUCCEEDED", outputs: [{ name: "zh", prefix: "vocabs/zh/" }] },
      }),
    },
  });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/my poems.txt`, "床前明月光\n疑是地上霜\n");
    const result = await bertctl([
      "vocab",
      "train",
      "--corpus",
      `${dir}/my poems.txt`,
      "--size",
      "500",
      "--name",
      "zh",
      "--tokenizer-addr",
      server.address,
    ]);
    assertEquals(result.code, 0, result.stderr);
    assertEquals(uploaded, "床前明月光\n疑是地上霜\n");
    assertEquals(calls[0], { upload: "my-poems" });
    assertEquals(calls[1]!.start.corpus, "my-poems");
    assertEquals(calls[1]!.start.vocab_size, 500);
    assertStringIncludes(result.stdout, "vocab-7 succeeded: vocabs/zh/");

    const json = await bertctl([
      "--json",
      "vocab",
      "train",
      "--corpus",
      "poems",
      "--size",
      "500",
      "--name",
      "zh",
      "--tokenizer-addr",
      server.address,
    ]);
    assertEquals(json.code, 0, json.stderr);
    const lines = json.stdout.split("\n").map((line) => JSON.parse(line));
    assertEquals(lines.filter((l) => l.event).map((l) => l.event.seq), [1, 2]);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bertctl tokenize --vocab DIR imports the vocab.txt once and prints one JSON line per input", async () => {
  const vocabs = new Map<string, string>();
  const server = await serve({
    ...quiet,
    service: "TokenizerService",
    handlers: {
      GetVocab: ({ name }) => {
        if (!vocabs.has(name)) throw new NotFound(`vocab "${name}" not found`);
        return { vocab: { name } };
      },
      ImportVocab: ({ name, vocab_txt }) => {
        vocabs.set(name, new TextDecoder().decode(vocab_txt));
        return { vocab: { name } };
      },
      Tokenize: ({ vocab, inputs }) => {
        const tokens = vocabs.get(vocab)!.trim().split("\n");
        return {
          encodings: inputs.map((input: Message) => ({
            tokens: ["[CLS]", ...[...input.text].map((c) => tokens.includes(c) ? c : "[UNK]"), "[SEP]"],
            ids: [2, ...[...input.text].map((c) => Math.max(1, tokens.indexOf(c))), 3],
            type_ids: Array(input.text.length + 2).fill(0),
            offsets: [{ start: 0, end: 0 }, ...[...input.text].map((_, i) => ({ start: i, end: i + 1 })), {
              start: 0,
              end: 0,
            }],
          })),
        };
      },
    },
  });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/vocab.txt`, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n你\n好\n");
    await Deno.writeTextFile(`${dir}/lines.txt`, "你好\n\n好\n");
    const one = await bertctl([
      "tokenize",
      "--vocab",
      dir,
      "--text",
      "你好",
      "--tokenizer-addr",
      server.address,
    ]);
    assertEquals(one.code, 0, one.stderr);
    assertEquals(JSON.parse(one.stdout), {
      tokens: ["[CLS]", "你", "好", "[SEP]"],
      ids: [2, 5, 6, 3],
      type_ids: [0, 0, 0, 0],
      offsets: [[0, 0], [0, 1], [1, 2], [0, 0]],
    });
    const file = await bertctl([
      "tokenize",
      "--vocab",
      dir,
      "--file",
      `${dir}/lines.txt`,
      "--tokenizer-addr",
      server.address,
    ]);
    assertEquals(file.code, 0, file.stderr);
    assertEquals(file.stdout.split("\n").length, 2, "one line per non-empty input line");
    assertEquals(vocabs.size, 1, "the folder's vocab was imported once, under a content-hash name");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("artifactNameFromPath() makes a valid artifact name", () => {
  assertEquals(artifactNameFromPath("/data/my poems.txt"), "my-poems");
  assertEquals(artifactNameFromPath("corpus.txt.gz"), "corpus");
  assertEquals(artifactNameFromPath("../shared/data/bert-base-chinese/"), "bert-base-chinese");
});

Deno.test("bertctl as a process: exit code 2 on a usage error", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "services/cli/bertctl.ts", "shards", "build", "--corpus", "c"],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(output.code, 2);
  assert(new TextDecoder().decode(output.stderr).includes("--seq-len is required"));
});

Deno.test("serviceOfJob() routes a job id to the service that owns its kind", () => {
  assertEquals(serviceOfJob("20261125154039349-train_vocab-ccbcfe"), "tokenizer");
  assertEquals(serviceOfJob("20261125154045384-build_pretraining-a47226"), "sharding");
  assertEquals(serviceOfJob("20261125154050598-pretrain-8d477a"), "trainer");
  assertEquals(serviceOfJob("20261125154107613-finetune-16fd20"), "trainer");
  assertEquals(serviceOfJob("mystery"), undefined);
});

Deno.test("bertctl train pretrain --init MODEL@VERSION continues from that model (init_model of SubmitJob)", async () => {
  const submitted: Message[] = [];
  const server = await serve({
    ...quiet,
    service: "TrainerService",
    handlers: {
      SubmitJob: (request) => {
        submitted.push(request);
        return {
          job: { id: "20261125220000000-pretrain-abc123", kind: "pretrain", state: "JOB_STATE_QUEUED" },
        };
      },
    },
  });
  try {
    const args = (init?: string) => [
      "train",
      "pretrain",
      "--shards",
      "long128",
      "--arch",
      "bert-mini",
      "--steps",
      "10",
      "--batch",
      "4",
      "--name",
      "phase2",
      ...(init === undefined ? [] : ["--init", init]),
      "--detach",
      "--trainer-addr",
      server.address,
    ];
    assertEquals((await bertctl(args("short32@20261125T215000Z"))).code, 0);
    assertEquals(submitted[0]!.pretrain.init_model, { name: "short32", version: "20261125T215000Z" });
    assertEquals((await bertctl(args("short32"))).code, 0);
    assertEquals(submitted[1]!.pretrain.init_model, { name: "short32", version: "" });
    assertEquals((await bertctl(args())).code, 0);
    assertEquals(submitted[2]!.pretrain.init_model, null, "no --init: a fresh model");
    const bad = await bertctl(args("@v1"));
    assertEquals(bad.code, 2);
    assertStringIncludes(bad.stderr, "--init needs MODEL[@VERSION]");
  } finally {
    await server.shutdown();
  }
});

Deno.test("bertctl eval --errors FILE writes the listed mistakes as JSON lines and asks for at most --max-errors", async () => {
  const asked: Message[] = [];
  const server = await serve({
    ...quiet,
    service: "TrainerService",
    handlers: {
      Evaluate: (request) => {
        asked.push(request);
        const errors = [
          { line: 7, text: "房间很旧", text_b: "", gold: ["1"], predicted: ["0"], confidence: 0.97 },
          { line: 3, text: "还行", text_b: "", gold: ["0"], predicted: ["1"], confidence: 0.61 },
        ].slice(0, Number(request.max_errors));
        return {
          model: { name: "senti", version: "v1" },
          task: "TASK_TYPE_CLASSIFY",
          metrics: { accuracy: 0.75 },
          examples: "8",
          error_count: "2",
          errors,
        };
      },
    },
  });
  const dir = await Deno.makeTempDir();
  try {
    const args = (...extra: string[]) => [
      "eval",
      "--model",
      "senti",
      "--task",
      "classify",
      "--data",
      "senti-test",
      ...extra,
      "--trainer-addr",
      server.address,
    ];
    const path = `${dir}/mistakes.jsonl`;
    const listed = await bertctl(args("--errors", path));
    assertEquals(listed.code, 0, listed.stderr);
    assertEquals(Number(asked[0]!.max_errors), 1000, "--errors alone asks for up to 1,000");
    assertEquals(JSON.parse(listed.stdout), {
      model: { name: "senti", version: "v1" },
      task: "TASK_TYPE_CLASSIFY",
      examples: 8,
      errors: 2,
      accuracy: 0.75,
    });
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\n").map((line) => JSON.parse(line));
    assertEquals(lines, [
      { line: 7, text: "房间很旧", gold: ["1"], predicted: ["0"], confidence: 0.97 },
      { line: 3, text: "还行", gold: ["0"], predicted: ["1"], confidence: 0.61 },
    ]);
    assertStringIncludes(listed.stderr, `2 of 2 mistakes written to ${path} (most confident first)`);

    const capped = await bertctl(args("--errors", path, "--max-errors", "1"));
    assertEquals([capped.code, Number(asked[1]!.max_errors)], [0, 1]);
    assertEquals((await Deno.readTextFile(path)).trimEnd().split("\n").length, 1);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["mistakes.jsonl"], "no partial file left");

    const plain = await bertctl(args());
    assertEquals([plain.code, Number(asked[2]!.max_errors)], [0, 0], "no --errors: counted, not listed");

    const orphan = await bertctl(args("--max-errors", "5"));
    assertEquals(orphan.code, 2);
    assertStringIncludes(orphan.stderr, "--max-errors needs --errors FILE");
    const zero = await bertctl(args("--errors", path, "--max-errors", "0"));
    assertEquals(zero.code, 2);
    assertStringIncludes(zero.stderr, "--max-errors must be an integer in [1, 10000]");
    assertEquals(asked.length, 3, "a usage error sends nothing");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bertctl shards build uploads a folder's files as weighted sources and prints what each gave", async () => {
  const uploads = new Map<string, { files: string[]; bytes: number }>();
  const starts: Message[] = [];
  const tokenizer = await serve({
    ...quiet,
    service: "TokenizerService",
    handlers: {
      UploadCorpus: async (requests) => {
        const upload = await receiveUpload(requests);
        const entry = { files: [] as string[], bytes: 0 };
        for await (const file of upload.files()) {
          entry.files.push(file.path);
          entry.bytes += (await new Response(file.stream).arrayBuffer()).byteLength;
        }
        uploads.set(upload.header.name, entry);
        return { corpus: { name: upload.header.name } };
      },
    },
  });
  const source = (corpus: string, instances: number) => ({
    corpus,
    sha256: "ab".repeat(32),
    weight: 1,
    documents: "4",
    documents_used: "4",
    characters: "40",
    instances: String(instances),
    tokens: String(instances * 16),
  });
  const sharding = await serve({
    ...quiet,
    service: "ShardingService",
    handlers: {
      StartBuildPretraining: (request) => {
        starts.push(request);
        return { job: { id: "shards-1", kind: "build_pretraining", state: "JOB_STATE_RUNNING" } };
      },
      WatchJob: async function* ({ job_id }) {
        yield { event: { job_id, seq: 1, type: "JOB_EVENT_TYPE_STATE", state: "JOB_STATE_SUCCEEDED" } };
      },
      GetJob: ({ job_id }) => ({ job: { id: job_id, state: "JOB_STATE_SUCCEEDED", outputs: [] } }),
      GetShards: ({ name }) => ({
        shard_set: { name, packed: true, sources: [source("a", 7), source("news", 1234)] },
        manifest_json: "{}",
      }),
    },
  });
  const dir = await Deno.makeTempDir();
  const addrs = ["--tokenizer-addr", tokenizer.address, "--sharding-addr", sharding.address];
  const build = (...args: string[]) =>
    bertctl(["shards", "build", ...args, "--vocab", "chars", "--seq-len", "16", "--name", "mix", ...addrs]);
  try {
    await Deno.mkdir(`${dir}/corpus`);
    await Deno.writeTextFile(`${dir}/corpus/a.txt`, "甲乙\n\n丙丁\n");
    const gz = new Uint8Array(
      await new Response(new Blob(["新闻\n"]).stream().pipeThrough(new CompressionStream("gzip")))
        .arrayBuffer(),
    );
    await Deno.writeFile(`${dir}/corpus/news.txt.gz`, gz);
    await Deno.writeTextFile(`${dir}/corpus/README.md`, "not a source");
    await Deno.writeTextFile(`${dir}/mix.txt`, "# weights\nnews 0.5\nwiki 3\n");

    const result = await build(
      "--corpus",
      `${dir}/corpus/`,
      "--corpus",
      "wiki",
      "--mix",
      `${dir}/mix.txt`,
      "--source",
      "wiki=2",
      "--packed",
    );
    assertEquals(result.code, 0, result.stderr);
    // Each file its own corpus, stored as it is (the .gz stays compressed); README.md is no source.
    assertEquals([...uploads.keys()].sort(), ["a", "news"]);
    assertEquals(uploads.get("news"), { files: ["news.txt.gz"], bytes: gz.byteLength });
    assertEquals(starts[0]!.sources.map(({ corpus, weight }: Message) => ({ corpus, weight })), [
      { corpus: "a", weight: 1 },
      { corpus: "news", weight: 0.5 },
      { corpus: "wiki", weight: 2 }, // --source wins over --mix
    ]);
    assertEquals([starts[0]!.corpus, starts[0]!.packed], ["", true]);
    const rows = result.stdout.split("\n").filter((line) => /^(a|news|total)\s/.test(line));
    assertEquals(rows.length, 3, result.stdout);
    assertStringIncludes(rows[1]!, "1234");
    assertStringIncludes(rows[2]!, "1241");

    // One unweighted corpus: the request is the single-corpus one, as before.
    assertEquals((await build("--corpus", "poems")).code, 0);
    assertEquals([starts[1]!.corpus, starts[1]!.sources, starts[1]!.packed], ["poems", [], false]);

    const usage: [string[], string][] = [
      [["--corpus", "wiki", "--source", "wikki=2"], "unknown source 'wikki' (the sources are: wiki)"],
      [["--corpus", "wiki", "--corpus", "poems", "--source", "poems=-1"], "must be a number >= 0"],
      [["--corpus", "wiki", "--source", "wiki"], "expected NAME=WEIGHT"],
      [["--corpus", "wiki", "--source", "wiki=0"], "every source has weight 0"],
      [["--corpus", "wiki", "--mix", `${dir}/none.txt`], `--mix ${dir}/none.txt: cannot read it`],
      [["--corpus", "wiki", "--corpus", "wiki"], "source 'wiki' is given twice"],
      [["--source", "wiki=1"], "--corpus is required"],
    ];
    for (const [args, message] of usage) {
      const bad = await build(...args);
      assertEquals(bad.code, 2, `${args.join(" ")}: ${bad.stderr}`);
      assertStringIncludes(bad.stderr, message);
    }
    assertEquals(starts.length, 2);
  } finally {
    await tokenizer.shutdown();
    await sharding.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bertctl models import-hf checks the folder holds an HF model before uploading a byte", async () => {
  let imports = 0;
  const server = await serve({
    ...quiet,
    service: "TrainerService",
    handlers: {
      ImportModel: async (requests) => {
        imports++;
        for await (const _ of requests) { /* drain */ }
        return { model: { model: { name: "x", version: "1" } } };
      },
    },
  });
  const dir = await Deno.makeTempDir();
  try {
    // Like /etc: readable files, none of them a model.
    await Deno.writeTextFile(`${dir}/passwd`, "root:x:0:0\n");
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    const result = await bertctl([
      "models",
      "import-hf",
      dir,
      "--name",
      "x",
      "--trainer-addr",
      server.address,
    ]);
    assertEquals(result.code, 2, result.stderr);
    assertStringIncludes(
      result.stderr,
      "is not a Hugging Face BERT folder: vocab.txt, model.safetensors missing",
    );
    await Deno.writeTextFile(`${dir}/vocab.txt`, "[PAD]\n");
    await Deno.writeTextFile(`${dir}/pytorch_model.bin`, "");
    const torch = await bertctl([
      "models",
      "import-hf",
      dir,
      "--name",
      "x",
      "--trainer-addr",
      server.address,
    ]);
    assertStringIncludes(torch.stderr, "pytorch_model.bin is not read");
    assertEquals(imports, 0);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

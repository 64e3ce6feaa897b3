import { assert, assertEquals, assertGreater, assertRejects } from "@std/assert";
import { loadSettings } from "../shared/config/mod.ts";
import { client, type Message } from "../shared/rpc/mod.ts";
import { FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted } from "../shared/errors.ts";
import { LocalStore } from "../shared/store/local.ts";
import { start } from "./main.ts";
import { tinyConfigJson, writeTinyShards } from "./testing.ts";

/** A trainer on a free loopback port over a fresh store folder, with a tiny shard set already in it. */
async function withTrainer(fn: (rpc: ReturnType<typeof client>, store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "bf-trainer-svc-" });
  const store = new LocalStore(dir);
  await writeTinyShards(store, "tiny", { count: 256 });
  const settings = loadSettings("trainer", {
    args: ["--port", "0", "--store", dir, "--threads", "1", "--log-level", "warn"],
    env: () => undefined,
  });
  const server = await start(settings);
  const rpc = client("TrainerService", server.address, { defaultDeadlineMs: 120_000 });
  try {
    await fn(rpc, store);
  } finally {
    rpc.close();
    await server.shutdown("test done");
    await Deno.remove(dir, { recursive: true });
  }
}

async function watchToEnd(rpc: ReturnType<typeof client>, jobId: string): Promise<Message[]> {
  const events: Message[] = [];
  for await (const response of rpc.serverStream("WatchJob", { job_id: jobId })) events.push(response.event);
  return events;
}

async function* upload(name: string, file: string, text: string, format = "") {
  yield { chunk: { header: { name, format, overwrite: false } } };
  const bytes = new TextEncoder().encode(text);
  yield { chunk: { file: { path: file, data: bytes, eof: true } } };
}

async function* hfUpload(dir: string, names: string[]) {
  yield { chunk: { header: { name: "imported" } } };
  for (const name of names) {
    yield { chunk: { file: { path: name, data: await Deno.readFile(`${dir}/m/${name}`), eof: true } } };
  }
}

const PRETRAIN = {
  name: "tiny-bert",
  pretrain: {
    shards: "tiny",
    config_json: tinyConfigJson(),
    steps: 10,
    batch_size: 8,
    learning_rate: 3e-3,
    checkpoint_every: 5,
    seed: 1,
  },
};

function sentimentCsv(n: number): string {
  // Token ids 5.. are CJK characters in the tiny vocab: label 1 texts use the first half, label 0 the second.
  const chars = Array.from({ length: 90 }, (_, i) => String.fromCodePoint(0x4e00 + i));
  const rows = ["label,text"];
  for (let i = 0; i < n; i++) {
    const label = i % 2;
    const pool = label ? chars.slice(0, 45) : chars.slice(45);
    const text = Array.from({ length: 6 + (i % 5) }, (_, k) => pool[(i * 7 + k * 3) % pool.length]).join("");
    rows.push(`${label},${text}`);
  }
  return rows.join("\n") + "\n";
}

Deno.test("TrainerService: pretrain then fine-tune over gRPC, watch events, published models, evaluate, export", () =>
  withTrainer(async (rpc, store) => {
    const { job } = await rpc.unary("SubmitJob", PRETRAIN);
    assertEquals(job.kind, "pretrain");
    assert(["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"].includes(job.state));
    const events = await watchToEnd(rpc, job.id);
    const types = new Set(events.map((e) => e.type));
    for (
      const t of [
        "JOB_EVENT_TYPE_STATE",
        "JOB_EVENT_TYPE_PROGRESS",
        "JOB_EVENT_TYPE_CHECKPOINT",
        "JOB_EVENT_TYPE_ARTIFACT",
      ]
    ) {
      assert(types.has(t), `${t} in ${[...types]}`);
    }
    const progress = events.filter((e) =>
      e.type === "JOB_EVENT_TYPE_PROGRESS" && e.loss !== undefined && e.loss !== null
    );
    assertGreater(progress.length, 0);
    const p = progress.at(-1)!;
    assertEquals(p.unit, "steps");
    assertEquals(p.total, "10");
    assert(p.mlm_accuracy >= 0 && p.nsp_accuracy >= 0 && p.learning_rate >= 0 && p.tokens_per_s > 0);
    const last = events.at(-1)!;
    assertEquals(last.state, "JOB_STATE_SUCCEEDED", last.message);
    const done = (await rpc.unary("GetJob", { job_id: job.id })).job;
    assertEquals(done.outputs[0].name, "tiny-bert");
    assertEquals(done.progress.step, "10");
    assert(done.progress.loss > 0 && done.progress.tokens_per_s > 0, JSON.stringify(done.progress));

    // Fine-tune the pretrained model on an uploaded data set.
    const uploaded = await rpc.clientStream("UploadDataset", upload("senti", "senti.csv", sentimentCsv(160)));
    assertEquals([uploaded.format, uploaded.examples, uploaded.labels], ["csv", "160", ["0", "1"]]);
    const ft = await rpc.unary("SubmitJob", {
      name: "tiny-senti",
      finetune: {
        base: { name: "tiny-bert" },
        task: "TASK_TYPE_CLASSIFY",
        train_dataset: "senti",
        epochs: 6,
        batch_size: 16,
        learning_rate: 3e-3,
        max_length: 16,
      },
    });
    const ftEvents = await watchToEnd(rpc, ft.job.id);
    assertEquals(ftEvents.at(-1)!.state, "JOB_STATE_SUCCEEDED", ftEvents.at(-1)!.message);
    const evalEvents = ftEvents.filter((e) => e.type === "JOB_EVENT_TYPE_EVAL");
    assertEquals(evalEvents.length, 6, "one evaluation per epoch");
    assert(evalEvents[0].metrics.accuracy !== undefined);

    const { models } = await rpc.unary("ListModels", {});
    assertEquals(models.map((m: Message) => m.model.name).sort(), ["tiny-bert", "tiny-senti"]);
    const senti = models.find((m: Message) => m.model.name === "tiny-senti");
    assertEquals([senti.task, senti.labels, senti.num_layers], ["TASK_TYPE_CLASSIFY", ["0", "1"], 1]);
    const prefix = `models/tiny-senti/${senti.model.version}`;
    for (const file of ["confusion.svg", "loss.svg", "metrics.json", "lineage.json", "tokenizer.json"]) {
      assert(await store.exists(`${prefix}/${file}`), file);
    }
    const config = await store.getJson<Message>(`${prefix}/config.json`);
    assertEquals(config.id2label, { "0": "0", "1": "1" });
    assertEquals(config.label2id, { "0": 0, "1": 1 });

    const evaluation = await rpc.unary("Evaluate", { model: { name: "tiny-senti" }, dataset: "senti" });
    for (const key of ["accuracy", "precision", "recall", "f1", "micro_f1", "macro_f1", "loss"]) {
      assert(Number.isFinite(evaluation.metrics[key]), key);
    }
    assertGreater(evaluation.metrics.accuracy, 0.75, "a separable toy task is learned");
    assertEquals(evaluation.confusion_matrix.length, 4);
    assertEquals(evaluation.errors, [], "mistakes are counted, listed only when asked for");
    assertEquals(
      Number(evaluation.error_count),
      Math.round(160 * (1 - evaluation.metrics.accuracy)),
    );

    // The same texts with every label flipped: each text the model gets right is now a mistake, listed with
    // its line and text, the most confident first.
    const flippedCsv = sentimentCsv(160).replace(/^([01]),/gm, (_, label) => `${1 - Number(label)},`);
    await rpc.clientStream("UploadDataset", upload("flipped", "flipped.csv", flippedCsv));
    const audit = await rpc.unary("Evaluate", {
      model: { name: "tiny-senti" },
      dataset: "flipped",
      max_errors: 5,
    });
    const mistakes = Math.round(160 * evaluation.metrics.accuracy);
    assertEquals(Number(audit.error_count), mistakes);
    assertEquals(audit.errors.length, 5);
    const lines = flippedCsv.split("\n");
    for (const [i, mistake] of audit.errors.entries()) {
      const [label, text] = lines[mistake.line - 1]!.split(",");
      assertEquals([mistake.text, mistake.gold], [text, [label]]);
      assertEquals(mistake.predicted, [String(1 - Number(label))]);
      assert(mistake.confidence >= 0.5 && mistake.confidence <= 1, String(mistake.confidence));
      if (i > 0) assert(mistake.confidence <= audit.errors[i - 1].confidence, "most confident first");
    }
    await assertRejects(
      () => rpc.unary("Evaluate", { model: { name: "tiny-senti" }, dataset: "flipped", max_errors: 10_001 }),
      InvalidArgument,
      "max_errors must be an integer in [0, 10000]: current value is 10001",
    );

    const files = new Map<string, number>();
    let first: Message | undefined;
    for await (
      const part of rpc.serverStream("ExportModel", {
        model: { name: "tiny-senti" },
        format: "EXPORT_FORMAT_HF",
      })
    ) {
      if (part.model) first = part.model;
      if (part.file) files.set(part.file.path, (files.get(part.file.path) ?? 0) + part.file.data.length);
    }
    assertEquals(first?.model.name, "tiny-senti");
    assertEquals(files.get("model.safetensors"), (await store.stat(`${prefix}/model.safetensors`))!.size);

    const onnx = new Map<string, number>();
    const onnxStream = rpc.serverStream("ExportModel", {
      model: { name: "tiny-senti" },
      format: "EXPORT_FORMAT_ONNX",
    });
    for await (const part of onnxStream) {
      if (part.file) onnx.set(part.file.path, (onnx.get(part.file.path) ?? 0) + part.file.data.length);
    }
    assertEquals([...onnx.keys()].sort(), [
      "config.json",
      "model.onnx",
      "tokenizer.json",
      "tokenizer_config.json",
      "vocab.txt",
    ]);
    assertGreater(
      onnx.get("model.onnx")!,
      0.9 * files.get("model.safetensors")!,
      "the graph carries the weights",
    );
  }));

Deno.test("TrainerService: error codes name the problem", () =>
  withTrainer(async (rpc) => {
    await assertRejects(
      () => rpc.unary("SubmitJob", { ...PRETRAIN, pretrain: { ...PRETRAIN.pretrain, shards: "missing" } }),
      NotFound,
      "missing",
    );
    await assertRejects(
      () => rpc.unary("SubmitJob", { ...PRETRAIN, pretrain: { ...PRETRAIN.pretrain, steps: 0 } }),
      InvalidArgument,
      "steps",
    );
    await assertRejects(() => rpc.unary("SubmitJob", { ...PRETRAIN, name: "../x" }), InvalidArgument, "name");
    /** A fine-tune of a base that does not exist: the settings are checked before the base is looked up. */
    const submitFinetune = (settings: Record<string, unknown>) =>
      rpc.unary("SubmitJob", {
        name: "ft",
        finetune: {
          base: { name: "nobody" },
          task: "TASK_TYPE_CLASSIFY",
          train_dataset: "senti",
          ...settings,
        },
      });
    await assertRejects(() => submitFinetune({}), NotFound, "finetune.base");
    await assertRejects(() => submitFinetune({ crf: true }), InvalidArgument, "crf");
    await assertRejects(
      () => submitFinetune({ task: "TASK_TYPE_NER", long_text_windows: true }),
      InvalidArgument,
      "long_text_windows is for tasks classify and multilabel",
    );
    await assertRejects(
      () => submitFinetune({ pooling: "max" }),
      InvalidArgument,
      "finetune.pooling must be cls or mean",
    );
    await assertRejects(
      () => submitFinetune({ task: "TASK_TYPE_NER", pooling: "mean" }),
      InvalidArgument,
      "finetune.pooling is for tasks classify, multilabel and pair",
    );
    await assertRejects(() => rpc.unary("GetJob", { job_id: "20261125150512345-pretrain-abcdef" }), NotFound);
    await assertRejects(
      () => rpc.unary("Evaluate", { model: { name: "ghost" }, dataset: "x" }),
      NotFound,
      "ghost",
    );
    await assertRejects(
      () => rpc.clientStream("UploadDataset", upload("bad", "bad.csv", "label,text\n1\n")),
      InvalidArgument,
      "bad.csv",
    );

    await assertRejects(
      () =>
        rpc.unary("SubmitJob", {
          ...PRETRAIN,
          pretrain: { ...PRETRAIN.pretrain, config_json: tinyConfigJson({ vocab_size: 500 }) },
        }),
      InvalidArgument,
      "vocab_size 500",
    );

    // A job failing at run time (its loss turns NaN) ends FAILED with the reason in an event and in the job. (A
    // learning rate of 1e30 did it before SubmitJob refused rates past 1: weights drawn 1e30 wide still pass.)
    const { job } = await rpc.unary("SubmitJob", {
      ...PRETRAIN,
      pretrain: { ...PRETRAIN.pretrain, config_json: tinyConfigJson({ initializer_range: 1e30 }) },
    });
    const events = await watchToEnd(rpc, job.id);
    assertEquals(events.at(-1)!.state, "JOB_STATE_FAILED");
    assert(events.some((e) => e.type === "JOB_EVENT_TYPE_LOG" && e.message.includes("diverged")));
    const failed = (await rpc.unary("GetJob", { job_id: job.id })).job;
    assert(failed.error.includes("diverged"), failed.error);
    await assertRejects(
      () => rpc.unary("CancelJob", { job_id: job.id }),
      FailedPrecondition,
      "already ended",
    );
    const pretrained = await rpc.unary("ListModels", { name: "tiny-bert" });
    assertEquals(pretrained.models, []);
  }));

Deno.test("TrainerService: one job at a time, the next queued; cancel stops with a checkpoint", () =>
  withTrainer(async (rpc, store) => {
    const long = { ...PRETRAIN, pretrain: { ...PRETRAIN.pretrain, steps: 400, checkpoint_every: 1000 } };
    const first = (await rpc.unary("SubmitJob", { ...long, name: "first" })).job;
    const second = (await rpc.unary("SubmitJob", { ...long, name: "second", request_id: "retry-me" })).job;
    const again = (await rpc.unary("SubmitJob", { ...long, name: "second", request_id: "retry-me" })).job;
    assertEquals(again.id, second.id, "the same request_id returns the first job");
    const queued = (await rpc.unary("GetJob", { job_id: second.id })).job;
    assertEquals([queued.state, queued.queue_position], ["JOB_STATE_QUEUED", 1]);
    const listed = await rpc.unary("ListJobs", { filter: { states: ["JOB_STATE_QUEUED"] } });
    assertEquals(listed.jobs.map((j: Message) => j.id), [second.id]);

    // Cancel the queued one at once, then the running one once it has made progress.
    assertEquals((await rpc.unary("CancelJob", { job_id: second.id })).job.state, "JOB_STATE_CANCELLED");
    // Poll (GetJob carries the latest progress) rather than break out of a watch stream.
    for (;;) {
      const { job } = await rpc.unary("GetJob", { job_id: first.id });
      if (Number(job.progress?.step ?? 0) >= 3) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const cancelled = (await rpc.unary("CancelJob", { job_id: first.id })).job;
    assertEquals(cancelled.state, "JOB_STATE_CANCELLED");
    const events = await watchToEnd(rpc, first.id);
    const checkpoints = events.filter((e) => e.type === "JOB_EVENT_TYPE_CHECKPOINT");
    assertEquals(checkpoints.length, 1, "the cancel wrote the one checkpoint (checkpoint_every is 1000)");
    const step = Number(checkpoints[0].checkpoint.version);
    assert(step >= 3 && step < 400, `stopped at step ${step}`);
    assert(await store.exists(`${checkpoints[0].checkpoint.prefix}model.safetensors`));
  }));

Deno.test("TrainerService: ImportModel takes an HF folder, refuses an incomplete one, and the import fine-tunes", () =>
  withTrainer(async (rpc) => {
    const { initWeights, saveModelDir } = await import("../shared/model/checkpoint.ts");
    const { parseConfig } = await import("../shared/model/config.ts");
    const { tinyVocabText } = await import("./testing.ts");
    const dir = await Deno.makeTempDir({ prefix: "bf-hf-import-" });
    try {
      const config = parseConfig(tinyConfigJson());
      await saveModelDir(`${dir}/m`, {
        config,
        weights: initWeights(config, { task: "pretrain" }, 2),
        vocabText: tinyVocabText(),
      });
      const files = (names: string[]) => hfUpload(dir, names);
      await assertRejects(
        () => rpc.clientStream("ImportModel", files(["config.json", "vocab.txt"])),
        InvalidArgument,
        "model.safetensors",
      );
      const { model } = await rpc.clientStream(
        "ImportModel",
        files(["config.json", "model.safetensors", "vocab.txt"]),
      );
      assertEquals([model.model.name, model.source, model.task, model.hidden_size], [
        "imported",
        "imported",
        "TASK_TYPE_PRETRAIN",
        16,
      ]);
      await rpc.clientStream("UploadDataset", upload("senti", "senti.csv", sentimentCsv(64)));
      const { job } = await rpc.unary("SubmitJob", {
        name: "from-import",
        finetune: {
          base: { name: "imported" },
          task: "TASK_TYPE_CLASSIFY",
          train_dataset: "senti",
          epochs: 1,
          batch_size: 16,
          max_length: 16,
        },
      });
      const events = await watchToEnd(rpc, job.id);
      assertEquals(events.at(-1)!.state, "JOB_STATE_SUCCEEDED", events.at(-1)!.message);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("TrainerService: SubmitJob and Evaluate refuse every setting out of its limits, naming field and limit; no job is made", () =>
  withTrainer(async (rpc, store) => {
    const { initWeights } = await import("../shared/model/checkpoint.ts");
    const { parseConfig } = await import("../shared/model/config.ts");
    const { publishModel } = await import("./models.ts");
    const { tinyVocabText } = await import("./testing.ts");
    const config = parseConfig(tinyConfigJson());
    for (
      const [name, head] of [["base", { task: "pretrain" }], ["clf", {
        task: "classify",
        numLabels: 2,
      }]] as const
    ) {
      await publishModel(store, {
        name,
        config,
        head,
        ...(head.task === "classify" ? { labels: ["0", "1"] } : {}),
        weights: initWeights(config, head, 3),
        vocabText: tinyVocabText(),
      });
    }
    await rpc.clientStream("UploadDataset", upload("senti", "senti.csv", sentimentCsv(64)));
    await rpc.clientStream("UploadDataset", upload("one", "one.csv", "label,text\n1,丁七\n1,七丁\n1,丁\n"));
    // A row without a label reads as multi-label data (an empty label set): a classify job cannot use it.
    await rpc.clientStream("UploadDataset", upload("gap", "gap.csv", "label,text\n0,丁七\n,七丁\n1,丁\n"));
    const pretrain = (change: Record<string, unknown>) => ({
      ...PRETRAIN,
      pretrain: { ...PRETRAIN.pretrain, ...change },
    });
    const finetune = (change: Record<string, unknown>) => ({
      name: "ft",
      finetune: {
        base: { name: "base" },
        task: "TASK_TYPE_CLASSIFY",
        train_dataset: "senti",
        max_length: 16,
        ...change,
      },
    });
    const huge = tinyConfigJson({
      hidden_size: 8192,
      num_attention_heads: 64,
      intermediate_size: 32768,
      num_hidden_layers: 48,
    });
    const cases: Array<[string, Message, typeof InvalidArgument, string]> = [
      // uint32 wrapped 1e12 to 3,567,587,328 steps and 2^32+8 to a batch of 8, silently.
      [
        "SubmitJob",
        pretrain({ steps: 1e12 }),
        InvalidArgument,
        "pretrain.steps must be an integer in [1, 10000000]: current value is 1000000000000",
      ],
      [
        "SubmitJob",
        pretrain({ batch_size: 2 ** 32 + 8 }),
        InvalidArgument,
        "pretrain.batch_size must be an integer in [1, 4096]: current value is 4294967304",
      ],
      [
        "SubmitJob",
        pretrain({ batch_size: 100_000 }),
        InvalidArgument,
        "pretrain.batch_size must be an integer in [1, 4096]",
      ],
      [
        "SubmitJob",
        pretrain({ grad_accum: 1e9 }),
        InvalidArgument,
        "pretrain.grad_accum must be an integer in [1, 1024]",
      ],
      [
        "SubmitJob",
        pretrain({ checkpoint_every: 2 ** 32 + 1 }),
        InvalidArgument,
        "pretrain.checkpoint_every must be an integer in [1, 10000000]",
      ],
      [
        "SubmitJob",
        pretrain({ learning_rate: NaN }),
        InvalidArgument,
        "pretrain.learning_rate must be in (0, 1]: current value is NaN",
      ],
      [
        "SubmitJob",
        pretrain({ learning_rate: 1e308 }),
        InvalidArgument,
        "pretrain.learning_rate must be in (0, 1]: current value is 1e+308",
      ],
      [
        "SubmitJob",
        pretrain({ weight_decay: -0.1 }),
        InvalidArgument,
        "pretrain.weight_decay must be in [0, 1]: current value is -0.1",
      ],
      [
        "SubmitJob",
        pretrain({ seed: 2 ** 32 }),
        InvalidArgument,
        "pretrain.seed must be an integer in [0, 4294967295]",
      ],
      ["SubmitJob", pretrain({ config_json: huge }), ResourceExhausted, "GiB of memory, and this node has"],
      [
        "SubmitJob",
        finetune({ epochs: 4294967295 }),
        InvalidArgument,
        "finetune.epochs must be an integer in [1, 1000]: current value is 4294967295",
      ],
      [
        "SubmitJob",
        finetune({ batch_size: 100_000 }),
        InvalidArgument,
        "finetune.batch_size must be an integer in [1, 4096]",
      ],
      [
        "SubmitJob",
        finetune({ learning_rate: NaN }),
        InvalidArgument,
        "finetune.learning_rate must be in (0, 1]: current value is NaN",
      ],
      [
        "SubmitJob",
        finetune({ max_length: 1 }),
        InvalidArgument,
        "finetune.max_length must be an integer in [8, 8192]: current value is 1",
      ],
      [
        "SubmitJob",
        finetune({ max_length: 64 }),
        InvalidArgument,
        "finetune.max_length 64 exceeds max_position_embeddings 32",
      ],
      [
        "SubmitJob",
        finetune({ reinit_layers: 99 }),
        InvalidArgument,
        "finetune.reinit_layers 99 exceeds the base model's 1 layers",
      ],
      [
        "SubmitJob",
        finetune({ task: "TASK_TYPE_NER" }),
        InvalidArgument,
        "finetune.train_dataset senti is csv data: task ner needs BIO or CLUENER",
      ],
      ["SubmitJob", finetune({ labels: ["0", ""] }), InvalidArgument, "finetune.labels[1] must not be empty"],
      [
        "SubmitJob",
        finetune({ train_dataset: "one" }),
        InvalidArgument,
        "finetune.train_dataset one has one label (1): task classify needs at least 2",
      ],
      ["SubmitJob", finetune({ train_dataset: "gap" }), InvalidArgument, "gap.csv:3: label is empty"],
      [
        "Evaluate",
        { model: { name: "clf" }, dataset: "senti", max_length: 1 },
        InvalidArgument,
        "max_length must be an integer in [8, 8192]: current value is 1",
      ],
      [
        "Evaluate",
        { model: { name: "clf" }, dataset: "senti", batch_size: 100_000 },
        InvalidArgument,
        "batch_size must be an integer in [1, 4096]",
      ],
    ];
    const wrong: string[] = [];
    for (const [method, request, type, message] of cases) {
      const outcome = await rpc.unary(method, request).then(
        (response) => `accepted (${response.job?.id ?? "evaluated"})`,
        (error) =>
          error instanceof type && error.message.includes(message) ? "" : `${error.name}: ${error.message}`,
      );
      if (outcome) wrong.push(`${message}\n    got ${outcome}`);
    }
    assertEquals(wrong, [], `\n  ${wrong.join("\n  ")}`);
    assertEquals((await rpc.unary("ListJobs", {})).jobs, [], "no refused submit made a job");
  }));

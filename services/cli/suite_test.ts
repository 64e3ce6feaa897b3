/**
 * `bertctl eval-suite` end to end on tiny data: a real trainer on a loopback port over a real store folder, a
 * tiny base model in it, tiny task files in the shared data layout, and the command run as a user runs it.
 */
import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "@std/assert";
import { stringify as stringifyCsv } from "@std/csv";
import { join } from "@std/path";
import { loadSettings } from "../shared/config/mod.ts";
import { client, type Message } from "../shared/rpc/mod.ts";
import { uploadRequests } from "../shared/rpc/streams.ts";
import { LocalStore } from "../shared/store/local.ts";
import { parseConfig } from "../shared/model/config.ts";
import { initWeights } from "../shared/model/checkpoint.ts";
import { parseNerExamples, parseTextExamples, type TextExample } from "../shared/data/formats.ts";
import { trainEvalSplit } from "../shared/data/split.ts";
import { majorityBaseline, trainLinearBaseline } from "../shared/baseline/linear.ts";
import { Rng } from "../shared/shards/rng.ts";
import { start } from "../trainer/main.ts";
import { publishModel } from "../trainer/models.ts";
import { tinyConfigJson, tinyVocabText } from "../trainer/testing.ts";
import { run } from "./bertctl.ts";
import { capExamples, datasetFile, selectTasks, SUITE_TASKS, type SuiteRow, taskData } from "./suite.ts";
import type { Output } from "./ui.ts";

/** Runs bertctl in-process, capturing what it prints. */
async function bertctl(args: string[]) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const out: Output = {
    json: args.includes("--json"),
    tty: false,
    line: (text) => stdout.push(text),
    jsonLine: (value) => stdout.push(JSON.stringify(value)),
    note: (text) => stderr.push(text),
  };
  const code = await run(args, out);
  return { code, stdout: stdout.join("\n"), stderr: stderr.join("\n") };
}

/** Characters of the tiny vocab (ids 5..): label "1" texts lean on the first half, "0" on the second. */
const CHARS = Array.from({ length: 90 }, (_, i) => String.fromCodePoint(0x4e00 + i));

function sentimentCsv(n: number, rng: Rng): string {
  const rows = [["label", "review"]];
  for (let i = 0; i < n; i++) {
    const label = rng.random() < 0.6 ? 1 : 0;
    // Mostly from the label's half, sometimes from the other, so no model is trivially perfect.
    const text = Array.from({ length: 5 + rng.randint(0, 6) }, () => {
      const own = rng.random() < 0.75;
      const half = (label === 1) === own ? 0 : 45;
      return CHARS[half + rng.randint(0, 44)]!;
    }).join("");
    rows.push([String(label), text]);
  }
  return stringifyCsv(rows);
}

function pairsCsv(n: number, rng: Rng): string {
  const rows = [["label", "text_a", "text_b"]];
  for (let i = 0; i < n; i++) {
    const a = Array.from({ length: 6 }, () => CHARS[rng.randint(0, 89)]!);
    const same = rng.random() < 0.5;
    const b = same ? rng.shuffle([...a]) : Array.from({ length: 6 }, () => CHARS[rng.randint(0, 89)]!);
    rows.push([same ? "1" : "0", a.join(""), b.join("")]);
  }
  return stringifyCsv(rows);
}

interface Fleet {
  address: string;
  store: LocalStore;
  dataDir: string;
  outDir: string;
  work: string;
}

/** A trainer over a fresh store holding a tiny pretrained model `tiny`, and tiny files for two tasks. */
async function withFleet(fn: (fleet: Fleet) => Promise<void>) {
  const work = await Deno.makeTempDir({ prefix: "bf-suite-test-" });
  const storeDir = join(work, "store"), dataDir = join(work, "data");
  const store = new LocalStore(storeDir);
  // 128 positions: the trainer's default max_length must fit whatever default it picks for a model this small.
  const config = parseConfig(tinyConfigJson({ max_position_embeddings: 128 }));
  await publishModel(store, {
    name: "tiny",
    config,
    head: { task: "pretrain" },
    weights: initWeights(config, { task: "pretrain" }, 3),
    vocabText: tinyVocabText(),
  });
  const rng = Rng.seeded(11);
  await Deno.mkdir(join(dataDir, "chnsenticorp"), { recursive: true });
  await Deno.writeTextFile(join(dataDir, "chnsenticorp/train.csv"), sentimentCsv(120, rng));
  await Deno.mkdir(join(dataDir, "tasks/afqmc"), { recursive: true });
  await Deno.writeTextFile(join(dataDir, "tasks/afqmc/train.csv"), pairsCsv(80, rng));
  await Deno.writeTextFile(join(dataDir, "tasks/afqmc/dev.csv"), pairsCsv(30, rng));
  const settings = loadSettings("trainer", {
    args: ["--port", "0", "--store", storeDir, "--threads", "1", "--log-level", "warn"],
    env: () => undefined,
  });
  const server = await start(settings);
  try {
    await fn({ address: server.address, store, dataDir, outDir: join(work, "report"), work });
  } finally {
    await server.shutdown("test done");
    await Deno.remove(work, { recursive: true });
  }
}

async function evaluate(address: string, model: string, task: string, name: string, csv: string) {
  const rpc = client("TrainerService", address, { defaultDeadlineMs: 120_000 });
  try {
    const bytes = new TextEncoder().encode(csv);
    await rpc.clientStream(
      "UploadDataset",
      uploadRequests({ name, overwrite: true }, [{ path: "data.csv", source: bytes }]),
    );
    const [modelName, version] = model.split("@");
    const response = await rpc.unary("Evaluate", {
      model: { name: modelName, version },
      task,
      dataset: name,
    });
    return response as Message;
  } finally {
    rpc.close();
  }
}

function accuracyOf(model: ReturnType<typeof trainLinearBaseline>, test: TextExample[]) {
  return test.filter((e) => model.predict(e.text, e.textB).label === e.labels[0]).length / test.length;
}

Deno.test({
  name:
    "bertctl eval-suite: rows hold Evaluate's score and the baselines of the same split; a missing task is skipped",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withFleet(async ({ address, dataDir, outDir }) => {
      const result = await bertctl([
        "eval-suite",
        "--model",
        "tiny",
        "--tasks",
        "chnsenticorp,afqmc,ocnli",
        "--data-dir",
        dataDir,
        "--out",
        outDir,
        "--json",
        "--trainer-addr",
        address,
      ]);
      assertEquals(result.code, 0, result.stderr);
      const rows: SuiteRow[] = result.stdout.split("\n").map((line) => JSON.parse(line));
      assertEquals(rows.map((r) => [r.task, r.metric, r.status]), [
        ["chnsenticorp", "accuracy", "ok"],
        ["afqmc", "accuracy", "ok"],
        ["ocnli", "accuracy", "skipped"],
      ]);
      assertStringIncludes(rows[2]!.reason!, join(dataDir, "tasks/ocnli/train.csv"));
      // Progress named each task and showed the job's progress.
      assertStringIncludes(result.stderr, "[1/3] chnsenticorp");
      assertStringIncludes(result.stderr, "[2/3] afqmc");

      // chnsenticorp: the 10% trainEvalSplit holds out (seed 42), as the quality bench splits it.
      const all = parseTextExamples(await Deno.readTextFile(join(dataDir, "chnsenticorp/train.csv")), {
        file: "train.csv",
        task: "classify",
      });
      const split = trainEvalSplit(all, { evalFraction: 0.1, seed: 42 });
      const senti = rows[0]!;
      assertEquals([senti.train_examples, senti.eval_examples], [split.train.length, split.eval.length]);
      const heldOut = stringifyCsv([
        ["label", "text"],
        ...split.eval.map((e) => [e.labels[0]!, e.text]),
      ]);
      const scored = await evaluate(address, senti.model!, "TASK_TYPE_CLASSIFY", "check-senti", heldOut);
      assertEquals(senti.bertforge, scored.metrics.accuracy);
      const linear = trainLinearBaseline(split.train.map((e) => ({ text: e.text, label: e.labels[0]! })), {
        seed: 42,
      });
      assertEquals(senti.baselines!.linear, accuracyOf(linear, split.eval));
      assertEquals(
        senti.baselines!.majority,
        majorityBaseline(
          split.train.map((e) => ({ label: e.labels[0]! })),
          split.eval.map((e) => ({ label: e.labels[0]! })),
        ).accuracy,
      );
      assertAlmostEquals(senti.vs_linear!, senti.bertforge! - senti.baselines!.linear, 1e-12);

      // afqmc: trained on train.csv, scored on dev.csv; the linear baseline reads them as pairs.
      const pairs = rows[1]!;
      const dev = await Deno.readTextFile(join(dataDir, "tasks/afqmc/dev.csv"));
      const pairScore = await evaluate(address, pairs.model!, "TASK_TYPE_PAIR", "check-afqmc", dev);
      assertEquals(pairs.bertforge, pairScore.metrics.accuracy);
      const read = async (file: string) =>
        parseTextExamples(await Deno.readTextFile(join(dataDir, file)), { file, task: "pair" });
      const [pairTrain, pairDev] = [await read("tasks/afqmc/train.csv"), await read("tasks/afqmc/dev.csv")];
      const pairLinear = trainLinearBaseline(
        pairTrain.map((e) => ({ text: e.text, textB: e.textB!, label: e.labels[0]! })),
        { seed: 42 },
      );
      assertEquals(pairs.baselines!.linear, accuracyOf(pairLinear, pairDev));
      assertEquals([pairs.train_examples, pairs.eval_examples], [80, 30]);

      // The same rows as JSON lines on disk, and a page with a bar chart per scored task and its loss curve.
      const jsonl = (await Deno.readTextFile(join(outDir, "suite.jsonl"))).trimEnd().split("\n");
      assertEquals(jsonl.map((line) => JSON.parse(line)), rows);
      const html = await Deno.readTextFile(join(outDir, "index.html"));
      for (const task of ["chnsenticorp", "afqmc"]) {
        assertStringIncludes(html, `<img src="${task}-scores.svg"`);
        assertStringIncludes(html, `<img src="${task}-loss.svg"`);
        const bars = await Deno.readTextFile(join(outDir, `${task}-scores.svg`));
        assert(bars.startsWith("<svg "), `${task}-scores.svg is an SVG`);
        assertStringIncludes(await Deno.readTextFile(join(outDir, `${task}-loss.svg`)), "<svg");
      }
      assertEquals(
        html.match(/<img src="[^"]+-scores\.svg"/g)?.length,
        2,
        "one bar chart per scored task, none for ocnli",
      );
      assertStringIncludes(html, "skipped: no ");

      // The table, with --max-train: the first N of a seeded permutation train, the held-out 10% is unchanged.
      const capped = await bertctl([
        "eval-suite",
        "--model",
        "tiny",
        "--tasks",
        "chnsenticorp",
        "--max-train",
        "25",
        "--data-dir",
        dataDir,
        "--out",
        outDir,
        "--trainer-addr",
        address,
      ]);
      assertEquals(capped.code, 0, capped.stderr);
      const [header, line] = capped.stdout.split("\n");
      assertEquals(header!.split(/\s{2,}/), [
        "TASK",
        "METRIC",
        "BERTFORGE",
        "LINEAR",
        "MAJORITY",
        "VS LINEAR",
        "TRAIN",
        "EVAL",
        "MODEL / NOTE",
      ]);
      const cells = line!.split(/\s{2,}/);
      assertEquals(cells.slice(0, 2), ["chnsenticorp", "accuracy"]);
      assertEquals(cells.slice(6, 8), ["25", String(split.eval.length)]);
      const small = trainLinearBaseline(
        capExamples(split.train, 25).map((e) => ({ text: e.text, label: e.labels[0]! })),
        { seed: 42 },
      );
      assertEquals(cells[3], `${(accuracyOf(small, split.eval) * 100).toFixed(1)}%`);
      assertStringIncludes(cells[8]!, "tiny-suite-chnsenticorp@");
    }),
});

Deno.test("bertctl eval-suite: unknown task names are a usage error listing the known ones", async () => {
  const result = await bertctl(["eval-suite", "--model", "m", "--tasks", "afqmc,sst2,cola"]);
  assertEquals(result.code, 2);
  assertStringIncludes(result.stderr, `unknown tasks "sst2", "cola"`);
  for (const task of SUITE_TASKS) assertStringIncludes(result.stderr, task.name);
  for (
    const [args, message] of [
      [["--tasks", "afqmc,afqmc"], `names "afqmc" twice`],
      [["--max-train", "0"], "--max-train must be an integer >= 1"],
      [["--tasks", ","], "--tasks names no task"],
    ] as const
  ) {
    const bad = await bertctl(["eval-suite", "--model", "m", ...args]);
    assertEquals(bad.code, 2, bad.stderr);
    assertStringIncludes(bad.stderr, message);
  }
  assertEquals((await bertctl(["eval-suite", "--tasks", "afqmc"])).code, 2, "--model is required");
});

Deno.test("bertctl eval-suite: a model the store does not have fails before any task runs", () =>
  withFleet(async ({ address, dataDir, outDir }) => {
    const result = await bertctl([
      "eval-suite",
      "--model",
      "nobody",
      "--data-dir",
      dataDir,
      "--out",
      outDir,
      "--trainer-addr",
      address,
    ]);
    assertEquals(result.code, 1);
    assertStringIncludes(result.stderr, "NOT_FOUND: model nobody not found");
    assertEquals(await Deno.stat(join(outDir, "suite.jsonl")).then(() => true, () => false), false);
  }));

Deno.test("selectTasks() keeps the order given; capExamples() is a seeded subsample in the original order", () => {
  assertEquals(selectTasks("afqmc,chnsenticorp").map((t) => t.name), ["afqmc", "chnsenticorp"]);
  assertEquals(selectTasks(undefined).length, SUITE_TASKS.length);
  const items = Array.from({ length: 100 }, (_, i) => i);
  const kept = capExamples(items, 10);
  assertEquals(kept.length, 10);
  assertEquals(kept, [...kept].sort((a, b) => a - b));
  assertEquals(capExamples(items, 10), kept, "the same ones every time");
  assert(capExamples(items, 10, 7).join() !== kept.join(), "another seed, another subsample");
  assertEquals(capExamples(items, 500), items);
});

Deno.test("taskData() and datasetFile(): what the suite uploads reads back as the very examples it scores", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bf-suite-data-" });
  try {
    await Deno.mkdir(join(dir, "peoples-daily-ner"), { recursive: true });
    await Deno.writeTextFile(
      join(dir, "peoples-daily-ner/train.bio"),
      "张 B-PER\n三 I-PER\n去 O\n\n北 B-LOC\n京 I-LOC\n",
    );
    await Deno.writeTextFile(join(dir, "peoples-daily-ner/dev.bio"), "李 B-PER\n好 O\n");
    await Deno.mkdir(join(dir, "tasks/bdci_car_multilabel"), { recursive: true });
    const rows = 'label,text\n动力|操控,"引号""和,逗号"\n价格,便宜\n';
    await Deno.writeTextFile(join(dir, "tasks/bdci_car_multilabel/train.csv"), rows);
    await Deno.writeTextFile(join(dir, "tasks/bdci_car_multilabel/dev.csv"), "label,text\n外观,好看\n");
    for (const name of ["peoples-daily-ner", "multilabel"]) {
      const task = SUITE_TASKS.find((t) => t.name === name)!;
      const data = await taskData(task, dir);
      assert(!("missing" in data), name);
      const file = datasetFile(task, data.train);
      const back = task.kind === "ner"
        ? parseNerExamples(file.text, { file: file.file, format: "bio" })
        : parseTextExamples(file.text, { file: file.file, task: "multilabel" });
      const strip = (examples: unknown[]) =>
        examples.map((e) => ({ ...(e as Record<string, unknown>), source: 0 }));
      assertEquals(strip(back), strip(data.train), name);
    }
    const ner = await taskData(SUITE_TASKS.find((t) => t.name === "peoples-daily-ner")!, dir);
    assertEquals("missing" in ner ? [] : ner.train.length, 2);
    const missing = await taskData(SUITE_TASKS.find((t) => t.name === "thucnews")!, dir);
    assertEquals(missing, { missing: `no ${join(dir, "tasks/thucnews/train.csv")}` });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The evaluation suite behind `bertctl eval-suite`: fine-tunes one model on each task of {@linkcode SUITE_TASKS}
 * through the trainer's gRPC API with the trainer's default settings (task, data and a derived name, nothing
 * else, so the trainer picks what fits the model's size), scores it on the task's held-out split with
 * `Evaluate`, and sets beside each score the linear and majority-class baselines computed here on the very
 * same examples. Rows go to `suite.jsonl` and an HTML page with a bar chart per task and each fine-tune's loss
 * curve, rewritten after every task so a long run keeps what it has finished.
 *
 * A client only: it talks to the trainer and reads the task files, never a service's code.
 *
 * @module
 */
import { fromFileUrl, join } from "@std/path";
import { stringify as stringifyCsv } from "@std/csv";
import { BertforgeError, InvalidArgument, NotFound } from "../shared/errors.ts";
import type { RpcClient } from "../shared/rpc/client.ts";
import type { Message } from "../shared/rpc/serve.ts";
import { uploadRequests, watchJob } from "../shared/rpc/streams.ts";
import {
  type NerExample,
  parseNerExamples,
  parseTextExamples,
  type TextExample,
} from "../shared/data/formats.ts";
import { trainEvalSplit } from "../shared/data/split.ts";
import { entityScores } from "../shared/data/metrics.ts";
import { permutation, Rng } from "../shared/shards/rng.ts";
import { majorityBaseline, trainLinearBaseline } from "../shared/baseline/linear.ts";
import { majorityLabelSet, microF1, trainLinearMultiLabel } from "../shared/baseline/linear_multilabel.ts";
import { trainLinearTagger } from "../shared/baseline/linear_tagger.ts";
import { barChartSvg } from "../shared/report/bars.ts";
import { escapeXml } from "../shared/report/svg.ts";
import { JobProgress, type Output, table } from "./ui.ts";

/** Where the task files are when `--data-dir` is not given: the shared data beside the repository. */
export const DEFAULT_DATA_DIR = fromFileUrl(new URL("../../../shared/data/", import.meta.url));

/** The split the quality bench uses (tests/bench/trainer_quality.ts), so suite and bench score the same 10%. */
const HELD_OUT = { evalFraction: 0.1, seed: 42 };
/** Seed of the baselines and of the `--max-train` subsample. */
const SEED = 42;

export type SuiteKind = "classify" | "pair" | "multilabel" | "ner";

/** One task of the suite. A new task is one more entry here (and, for a new kind, one more entry in KINDS). */
export interface SuiteTask {
  /** The name `--tasks` takes. */
  name: string;
  kind: SuiteKind;
  /** NER with a CRF layer on the tagger: part of what the task is, not a tuning choice. */
  crf?: boolean;
  /** The training file, relative to the data folder. */
  train: string;
  /** The scored file; absent: the 10% of `train` held out by trainEvalSplit (seed 42), the rest trains. */
  eval?: string;
  /** One line for the report. */
  about: string;
}

export const SUITE_TASKS: readonly SuiteTask[] = [
  {
    name: "chnsenticorp",
    kind: "classify",
    train: "chnsenticorp/train.csv",
    about: "hotel review sentiment, 2 classes; 10% of train.csv held out (seed 42)",
  },
  {
    name: "peoples-daily-ner",
    kind: "ner",
    crf: true,
    train: "peoples-daily-ner/train.bio",
    eval: "peoples-daily-ner/dev.bio",
    about: "named entities PER / LOC / ORG (BIO, CRF), scored on dev.bio",
  },
  {
    name: "thucnews",
    kind: "classify",
    train: "tasks/thucnews/train.csv",
    eval: "tasks/thucnews/dev.csv",
    about: "news title topics, 10 classes, scored on dev.csv",
  },
  {
    name: "afqmc",
    kind: "pair",
    train: "tasks/afqmc/train.csv",
    eval: "tasks/afqmc/dev.csv",
    about: "question pairs: same meaning or not, scored on dev.csv",
  },
  {
    name: "ocnli",
    kind: "pair",
    train: "tasks/ocnli/train.csv",
    eval: "tasks/ocnli/dev.csv",
    about: "natural-language inference, 3 classes, scored on dev.csv",
  },
  {
    name: "multilabel",
    kind: "multilabel",
    train: "tasks/bdci_car_multilabel/train.csv",
    eval: "tasks/bdci_car_multilabel/dev.csv",
    about: "aspects of car-forum posts, 10 labels, scored on dev.csv",
  },
];

type Examples = TextExample[] | NerExample[];

/** What a kind of task needs: its trainer task, the metric scored, how its files read and write, its baselines. */
interface KindSpec {
  trainerTask: string;
  /** The row's metric name. */
  metric: string;
  /** The key of `EvaluateResponse.metrics` holding it. */
  evaluateKey: string;
  read(content: string, file: string): Examples;
  /** The examples as a data set file the trainer reads (name and text). */
  write(examples: Examples): { file: string; text: string };
  baselines(train: Examples, test: Examples): { linear: number; majority: number };
}

const textKind = (
  kind: "classify" | "pair" | "multilabel",
  trainerTask: string,
  metric: string,
  evaluateKey: string,
  baselines: (train: TextExample[], test: TextExample[]) => { linear: number; majority: number },
): KindSpec => ({
  trainerTask,
  metric,
  evaluateKey,
  read: (content, file) => parseTextExamples(content, { file, task: kind, format: "csv" }),
  write: (examples) => {
    const rows = (examples as TextExample[]).map((e) => {
      const label = e.labels.join("|");
      return kind === "pair" ? [label, e.text, e.textB ?? ""] : [label, e.text];
    });
    const header = kind === "pair" ? ["label", "text_a", "text_b"] : ["label", "text"];
    return { file: "data.csv", text: stringifyCsv([header, ...rows]) };
  },
  baselines: (train, test) => baselines(train as TextExample[], test as TextExample[]),
});

/** Accuracy of the single-label linear model and of the majority class (texts, or pairs when `textB` is set). */
function singleLabelBaselines(train: TextExample[], test: TextExample[]) {
  const model = trainLinearBaseline(
    train.map((e) => ({
      text: e.text,
      ...(e.textB !== undefined ? { textB: e.textB } : {}),
      label: e.labels[0]!,
    })),
    { seed: SEED },
  );
  const right = test.filter((e) => model.predict(e.text, e.textB).label === e.labels[0]).length;
  const majority = majorityBaseline(
    train.map((e) => ({ label: e.labels[0]! })),
    test.map((e) => ({ label: e.labels[0]! })),
  );
  return { linear: test.length ? right / test.length : 0, majority: majority.accuracy };
}

const KINDS: Record<SuiteKind, KindSpec> = {
  classify: textKind("classify", "TASK_TYPE_CLASSIFY", "accuracy", "accuracy", singleLabelBaselines),
  pair: textKind("pair", "TASK_TYPE_PAIR", "accuracy", "accuracy", singleLabelBaselines),
  multilabel: textKind("multilabel", "TASK_TYPE_MULTILABEL", "micro_f1", "micro_f1", (train, test) => {
    const model = trainLinearMultiLabel(train, { seed: SEED });
    // Every label either side knows, so a gold label the training data lacks still counts as missed.
    const labels = [...new Set([...model.labels, ...test.flatMap((e) => e.labels)])].sort();
    const linear = microF1(labels, test.map((e) => e.labels), test.map((e) => model.predict(e.text).labels));
    return { linear, majority: majorityLabelSet(train, test).microF1 };
  }),
  ner: {
    trainerTask: "TASK_TYPE_NER",
    // Entity-level F1 as seqeval computes it (Evaluate's `f1` for a NER model).
    metric: "entity_f1",
    evaluateKey: "f1",
    read: (content, file) => parseNerExamples(content, { file, format: "bio" }),
    write: (examples) => ({
      file: "data.bio",
      text: (examples as NerExample[]).map((e) => e.units.map((u, i) => `${u} ${e.tags[i]}\n`).join("")).join(
        "\n",
      ),
    }),
    baselines: (trainExamples, testExamples) => {
      const train = (trainExamples as NerExample[]).map((e) => ({ chars: e.units, tags: e.tags }));
      const test = testExamples as NerExample[];
      const tagger = trainLinearTagger(train, { seed: SEED });
      const linear = entityScores(test.map((e) => e.tags), test.map((e) => tagger.predict(e.units))).f1;
      // The most frequent training tag on every character: "O" in practice, so no entity and F1 0.
      const counts = new Map<string, number>();
      for (const s of train) for (const t of s.tags) counts.set(t, (counts.get(t) ?? 0) + 1);
      const top = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0] ?? "O";
      const majority = entityScores(test.map((e) => e.tags), test.map((e) => e.tags.map(() => top))).f1;
      return { linear, majority };
    },
  },
};

/** The examples as the data set file the suite uploads for a task: its name and text, in the task's own format. */
export function datasetFile(task: SuiteTask, examples: Examples): { file: string; text: string } {
  return KINDS[task.kind].write(examples);
}

/** The metric a task is scored by (the `metric` of its rows). */
export function metricOf(task: SuiteTask): string {
  return KINDS[task.kind].metric;
}

/** The tasks `--tasks a,b` names, in the order given; every task when absent. */
export function selectTasks(
  list: string | undefined,
  tasks: readonly SuiteTask[] = SUITE_TASKS,
): SuiteTask[] {
  if (list === undefined) return [...tasks];
  const names = list.split(",").map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new InvalidArgument("--tasks names no task");
  const known = tasks.map((t) => t.name);
  const unknown = names.filter((n) => !known.includes(n));
  if (unknown.length) {
    throw new InvalidArgument(
      `--tasks: unknown task${unknown.length > 1 ? "s" : ""} ${
        unknown.map((n) => `"${n}"`).join(", ")
      }; known tasks are ${known.join(", ")}`,
    );
  }
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new InvalidArgument(`--tasks names "${twice}" twice`);
  return names.map((n) => tasks.find((t) => t.name === n)!);
}

/** At most `n` of `items`, the same ones for a seed on every machine, in their original order. */
export function capExamples<T>(items: readonly T[], n: number | undefined, seed = SEED): T[] {
  if (n === undefined || items.length <= n) return [...items];
  if (!(Number.isSafeInteger(n) && n >= 1)) {
    throw new RangeError(`Cannot keep ${n} examples: need an integer >= 1`);
  }
  const order = permutation(items.length, Rng.seeded(seed, 0x5c17e));
  const kept = Array.from(order.subarray(0, n)).sort((a, b) => a - b);
  return kept.map((i) => items[i]!);
}

/** One line of the suite: a task scored, or skipped / failed with the reason. */
export interface SuiteRow {
  task: string;
  metric: string;
  status: "ok" | "skipped" | "failed";
  /** The fine-tuned model's score on the held-out examples (Evaluate's value). */
  bertforge?: number;
  /** Computed here on the same training and held-out examples. */
  baselines?: { linear: number; majority: number };
  /** bertforge minus the linear baseline. */
  vs_linear?: number;
  /** The fine-tuned model, NAME@VERSION. */
  model?: string;
  train_examples?: number;
  eval_examples?: number;
  seconds: number;
  reason?: string;
}

export interface SuiteOptions {
  model: { name: string; version: string };
  tasks: readonly SuiteTask[];
  dataDir: string;
  outDir: string;
  /** Cap on each task's training examples (a deterministic subsample), for quick runs. */
  maxTrain?: number;
  trainer: RpcClient;
  /** Progress goes to its `note` (stderr): stdout is left to the rows. */
  out: Output;
  /** Called as each row is ready. */
  onRow?: (row: SuiteRow) => void;
}

/** Fine-tunes and scores every task in turn; writes suite.jsonl and index.html; returns the rows. */
export async function runSuite(options: SuiteOptions): Promise<SuiteRow[]> {
  if (options.tasks.length === 0) throw new InvalidArgument("the suite needs at least one task");
  if (options.maxTrain !== undefined && !(Number.isSafeInteger(options.maxTrain) && options.maxTrain >= 1)) {
    throw new InvalidArgument(`--max-train must be an integer >= 1: got ${options.maxTrain}`);
  }
  const base = await resolveBase(options.trainer, options.model);
  const rows: SuiteRow[] = [];
  const pictures = new Map<string, string[]>();
  await Deno.mkdir(options.outDir, { recursive: true });
  for (const [i, task] of options.tasks.entries()) {
    const label = `[${i + 1}/${options.tasks.length}] ${task.name}`;
    const { row, loss } = await runTask(task, base, options, label);
    rows.push(row);
    pictures.set(task.name, await writePictures(options.outDir, task, row, loss));
    await writeOutputs(options, base, rows, pictures);
    options.onRow?.(row);
  }
  return rows;
}

/** The base model's exact version (the latest when none is given), or NOT_FOUND before any work starts. */
async function resolveBase(
  trainer: RpcClient,
  model: { name: string; version: string },
): Promise<{ name: string; version: string }> {
  const { models } = await trainer.unary("ListModels", { name: model.name, page: { page_size: 1000 } });
  const versions = (models as Message[]).map((m) => String(m.model?.version ?? "")).sort();
  const version = model.version ? versions.find((v) => v === model.version) : versions.at(-1);
  if (!version) {
    throw new NotFound(
      model.version
        ? `model ${model.name}@${model.version} not found (versions: ${versions.join(", ") || "none"})`
        : `model ${model.name} not found`,
    );
  }
  return { name: model.name, version };
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** The training and held-out examples of a task as the suite uses them, or why it cannot. */
export async function taskData(
  task: SuiteTask,
  dataDir: string,
  maxTrain?: number,
): Promise<{ train: Examples; eval: Examples; split: string } | { missing: string }> {
  const kind = KINDS[task.kind];
  const files = [task.train, ...(task.eval ? [task.eval] : [])].map((f) => join(dataDir, f));
  for (const file of files) if (!(await exists(file))) return { missing: `no ${file}` };
  const all = kind.read(await Deno.readTextFile(files[0]!), task.train);
  let train: Examples, test: Examples, split: string;
  if (task.eval) {
    train = all;
    test = kind.read(await Deno.readTextFile(files[1]!), task.eval);
    split = task.eval;
  } else {
    ({ train, eval: test } = trainEvalSplit<TextExample | NerExample>(all, HELD_OUT) as {
      train: Examples;
      eval: Examples;
    });
    split = `${HELD_OUT.evalFraction * 100}% of ${task.train}, seed ${HELD_OUT.seed}`;
  }
  if (train.length === 0 || test.length === 0) {
    return { missing: `${train.length ? "no held-out" : "no training"} examples in ${files.join(" / ")}` };
  }
  return { train: capExamples<TextExample | NerExample>(train, maxTrain) as Examples, eval: test, split };
}

async function runTask(
  task: SuiteTask,
  base: { name: string; version: string },
  options: SuiteOptions,
  label: string,
): Promise<{ row: SuiteRow; loss?: string }> {
  const started = performance.now();
  const kind = KINDS[task.kind];
  const seconds = () => Math.round((performance.now() - started) / 100) / 10;
  const note = (text: string) => options.out.note(`${label}: ${text}`);
  const row: SuiteRow = { task: task.name, metric: kind.metric, status: "ok", seconds: 0 };
  const data = await taskData(task, options.dataDir, options.maxTrain).catch((error) => {
    // A malformed file is this task's failure, not the suite's.
    if (error instanceof InvalidArgument) return { failed: error.message };
    throw error;
  });
  if ("missing" in data) {
    note(`skipped: ${data.missing}`);
    return { row: { ...row, status: "skipped", reason: data.missing, seconds: seconds() } };
  }
  if ("failed" in data) {
    note(`failed: ${data.failed}`);
    return { row: { ...row, status: "failed", reason: data.failed, seconds: seconds() } };
  }
  row.train_examples = data.train.length;
  row.eval_examples = data.eval.length;
  note(`${data.train.length} training examples, ${data.eval.length} held out (${data.split})`);
  // Before the job, not beside it: the linear models are synchronous and would freeze the progress bar.
  const baselines = kind.baselines(data.train, data.eval);
  row.baselines = baselines;
  note(
    `linear baseline ${percent(baselines.linear)}, majority ${percent(baselines.majority)} (${kind.metric})`,
  );

  const trainer = options.trainer;
  const stem = `${base.name}-suite-${task.name}`;
  try {
    const trainSet = await uploadDataset(trainer, `${stem}-train`, kind.write(data.train));
    const evalSet = await uploadDataset(trainer, `${stem}-eval`, kind.write(data.eval));
    // Task, data and name only: every tuning choice is the trainer's default for this model's size. No
    // eval_dataset either, so early stopping watches the trainer's own 10% of the training set, never the
    // examples scored here.
    const { job } = await trainer.unary("SubmitJob", {
      name: stem,
      finetune: {
        base,
        task: kind.trainerTask,
        crf: !!task.crf,
        train_dataset: trainSet,
      },
      request_id: crypto.randomUUID(),
    });
    note(`job ${job.id} fine-tunes ${base.name}@${base.version} as ${stem}`);
    const final = await followJob(trainer, String(job.id), label, options.out);
    if (final.state !== "JOB_STATE_SUCCEEDED") {
      const state = String(final.state).replace("JOB_STATE_", "").toLowerCase();
      const reason = `job ${job.id} ${state}${final.error ? `: ${final.error}` : ""}`;
      note(reason);
      return { row: { ...row, status: "failed", reason, seconds: seconds() } };
    }
    const output = (final.outputs as Message[])[0];
    const model = { name: String(output?.name ?? stem), version: String(output?.version ?? "") };
    row.model = `${model.name}@${model.version}`;
    const evaluation = await trainer.unary("Evaluate", {
      model,
      task: kind.trainerTask,
      dataset: evalSet,
    }, { deadlineMs: 0 });
    const value = evaluation.metrics?.[kind.evaluateKey];
    if (typeof value !== "number") {
      throw new BertforgeError(
        "INTERNAL",
        `Evaluate returned no ${kind.evaluateKey} for ${row.model}: ${JSON.stringify(evaluation.metrics)}`,
      );
    }
    row.bertforge = value;
    row.vs_linear = value - baselines.linear;
    note(`${kind.metric} ${percent(value)} (linear ${signed(row.vs_linear)})`);
    const loss = await publishedPicture(trainer, model, "loss.svg");
    return { row: { ...row, seconds: seconds() }, ...(loss ? { loss } : {}) };
  } catch (error) {
    // A fleet that is gone or a call it does not know ends the suite; anything else ends only this task.
    const code = (error as BertforgeError).code;
    if (["UNAVAILABLE", "UNIMPLEMENTED", "UNAUTHENTICATED"].includes(code)) throw error;
    const reason = `${code ? `${code}: ` : ""}${(error as Error).message}`;
    note(`failed: ${reason}`);
    return { row: { ...row, status: "failed", reason, seconds: seconds() } };
  }
}

async function uploadDataset(
  trainer: RpcClient,
  name: string,
  content: { file: string; text: string },
): Promise<string> {
  const bytes = new TextEncoder().encode(content.text);
  await trainer.clientStream(
    "UploadDataset",
    uploadRequests({ name, overwrite: true, size_bytes: bytes.length }, [{
      path: content.file,
      source: bytes,
    }]),
  );
  return name;
}

/** Watches a job to its end with a progress bar on stderr, as other bertctl commands show jobs; returns the job. */
async function followJob(trainer: RpcClient, id: string, label: string, out: Output): Promise<Message> {
  // Bars and notes on stderr in every mode: stdout holds only the rows. With --json, plain lines, no redrawing.
  const progressOut: Output = {
    json: false,
    tty: out.json ? false : out.tty,
    line: (text) => out.note(text),
    jsonLine: (value) => out.note(JSON.stringify(value)),
    note: (text) => out.note(text),
  };
  const progress = new JobProgress(progressOut, label);
  for await (const event of watchJob(trainer, id)) progress.event(event);
  progress.finishLine();
  const { job } = await trainer.unary("GetJob", { job_id: id });
  return job;
}

/**
 * One picture the trainer published beside a model (loss.svg), through ExportModel. The parts stream in name
 * order (the manifest sorts them), so the stream is left as soon as the picture is whole or a later name
 * shows it is not there: the weights, which sort after it, are never downloaded.
 */
async function publishedPicture(
  trainer: RpcClient,
  model: { name: string; version: string },
  file: string,
): Promise<string | undefined> {
  const chunks: Uint8Array[] = [];
  for await (const message of trainer.serverStream("ExportModel", { model, format: "EXPORT_FORMAT_HF" })) {
    const chunk = message.file;
    if (!chunk?.path) continue;
    if (chunk.path === file) {
      chunks.push(chunk.data instanceof Uint8Array ? chunk.data : new Uint8Array(chunk.data ?? []));
      if (chunk.eof) return new TextDecoder().decode(concat(chunks));
    } else if (chunk.path > file) return undefined;
  }
  return undefined;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

function percent(v: number | undefined): string {
  return v === undefined ? "-" : `${(v * 100).toFixed(1)}%`;
}

function signed(v: number | undefined): string {
  return v === undefined ? "-" : `${v >= 0 ? "+" : ""}${(v * 100).toFixed(1)}`;
}

/** The rows as the table bertctl prints: scores in percent, the difference to the linear model in points. */
export function suiteTable(rows: readonly SuiteRow[]): string {
  return table(
    ["TASK", "METRIC", "BERTFORGE", "LINEAR", "MAJORITY", "VS LINEAR", "TRAIN", "EVAL", "MODEL / NOTE"],
    rows.map((r) => [
      r.task,
      r.metric,
      percent(r.bertforge),
      percent(r.baselines?.linear),
      percent(r.baselines?.majority),
      signed(r.vs_linear),
      r.train_examples ?? "-",
      r.eval_examples ?? "-",
      r.status === "ok" ? r.model ?? "" : `${r.status}: ${r.reason ?? ""}`,
    ]),
  );
}

/** `<task>-scores.svg` (always, when there is a score or a baseline) and `<task>-loss.svg`; returns their names. */
async function writePictures(
  outDir: string,
  task: SuiteTask,
  row: SuiteRow,
  loss?: string,
): Promise<string[]> {
  const names: string[] = [];
  const bars = [
    ...(row.bertforge !== undefined ? [{ name: "bertforge", value: row.bertforge, color: "#1f77b4" }] : []),
    ...(row.baselines
      ? [
        { name: "linear", value: row.baselines.linear, color: "#ff7f0e" },
        { name: "majority", value: row.baselines.majority, color: "#999" },
      ]
      : []),
  ];
  if (bars.length) {
    names.push(`${task.name}-scores.svg`);
    await writeAtomically(
      join(outDir, names.at(-1)!),
      barChartSvg({
        title: `${task.name}: ${row.metric}`,
        yLabel: row.metric,
        yRange: [0, 1],
        bars,
        format: percent,
      }),
    );
  }
  if (loss) {
    names.push(`${task.name}-loss.svg`);
    await writeAtomically(join(outDir, names.at(-1)!), loss);
  }
  return names;
}

/** Written aside and renamed, so a reader sees the previous file or the new one, never half of one. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const partial = `${path}.partial-${Deno.pid}`;
  await Deno.writeTextFile(partial, text);
  await Deno.rename(partial, path);
}

async function writeOutputs(
  options: SuiteOptions,
  base: { name: string; version: string },
  rows: readonly SuiteRow[],
  pictures: Map<string, string[]>,
): Promise<void> {
  await writeAtomically(
    join(options.outDir, "suite.jsonl"),
    rows.map((r) => JSON.stringify(r) + "\n").join(""),
  );
  const about = new Map(options.tasks.map((t) => [t.name, t.about]));
  const cell = (text: string, cls = "") => `<td${cls ? ` class="${cls}"` : ""}>${escapeXml(text)}</td>`;
  const tableRows = rows.map((r) =>
    `<tr>${cell(r.task)}${cell(r.metric)}${cell(percent(r.bertforge), "score")}${
      cell(percent(r.baselines?.linear))
    }${cell(percent(r.baselines?.majority))}${
      cell(signed(r.vs_linear), (r.vs_linear ?? 0) >= 0 ? "up" : "down")
    }${cell(String(r.train_examples ?? "-"))}${cell(String(r.eval_examples ?? "-"))}${
      cell(r.status === "ok" ? r.model ?? "" : `${r.status}: ${r.reason ?? ""}`)
    }</tr>`
  );
  const sections = rows.map((r) =>
    `<h2>${escapeXml(r.task)}</h2>\n<p>${escapeXml(about.get(r.task) ?? "")}${
      r.status === "ok" ? "" : ` — ${escapeXml(`${r.status}: ${r.reason ?? ""}`)}`
    }</p>\n${
      (pictures.get(r.task) ?? []).map((p) =>
        `<figure><img src="${escapeXml(p)}" alt="${escapeXml(p)}"><figcaption>${
          escapeXml(p)
        }</figcaption></figure>`
      ).join("\n")
    }`
  );
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bertforge evaluation suite: ${escapeXml(`${base.name}@${base.version}`)}</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
  h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
  table { border-collapse: collapse; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #eee; text-align: left; }
  figure { display: inline-block; margin: .5rem; vertical-align: top; } img { max-width: 520px; border: 1px solid #eee; }
  .score { font-weight: 600; } .up { color: #0a7a2f; } .down { color: #b00020; }
</style>
</head>
<body>
<h1>Evaluation suite of ${escapeXml(`${base.name}@${base.version}`)}</h1>
<p>Each task fine-tuned with the trainer's default settings for this model and scored on held-out data the
fine-tune never saw; the linear baseline (character uni+bigram logistic regression, a window tagger for NER) and the
majority class are trained and scored on the same examples. Generated ${new Date().toISOString()}${
    options.maxTrain ? `, training sets capped at ${options.maxTrain} examples` : ""
  }.</p>
<table>
<tr><th>task</th><th>metric</th><th>bertforge</th><th>linear</th><th>majority</th><th>vs linear</th><th>train</th><th>eval</th><th>model / note</th></tr>
${tableRows.join("\n")}
</table>
${sections.join("\n")}
</body>
</html>
`;
  await writeAtomically(join(options.outDir, "index.html"), html);
}

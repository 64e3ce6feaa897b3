/**
 * `make run` / `deno task demo [--quick] [--corpus FILE] [--data TRAIN.csv[,EVAL.csv]] [--port-base N|auto]`:
 * the whole bertforge pipeline on this machine, through the same `bertctl` commands a user types (each is
 * echoed so it can be copied):
 *
 *   corpus ─vocab train─▶ vocab ─shards build --wwm─▶ shards ─train pretrain─▶ model
 *          ─train finetune─▶ classifier ─eval / predict (gRPC) / HTTP─▶ report/index.html
 *
 * The fleet runs in the background (`deno task fleet`, logs in .bertforge/demo/fleet.log) on a fresh
 * embedded store and a free port base (so two demos in two clones can run at once), and is stopped at the end,
 * on Ctrl-C, and on the next run if a killed run left it behind; if it cannot start, its last log lines are
 * printed here.
 * The default corpus and task come from the npm package `chinese-poetry`: a fresh machine has them.
 */
import { parseArgs } from "@std/cli";
import { parse as parseCsv, parseRows as parseCsvRows, stringify as stringifyCsv } from "@std/csv";
import { fromFileUrl, join, resolve } from "@std/path";
import { majorityBaseline, trainLinearBaseline } from "../shared/baseline/linear.ts";
import { buildDemoData, formOf, POETS, TASK_FORM } from "./demo/poetry.ts";
import { writeReport } from "./demo/report.ts";

const ROOT = fromFileUrl(new URL("../..", import.meta.url));

/** Sizes of the two modes. The full run is budgeted at ~15 minutes on 2 cores, the quick one at ~3. */
const PLANS = {
  full: {
    corpusPoems: 30_000,
    labelledPerPoet: 148,
    vocabSize: 8_000,
    seqLen: 128,
    dupeFactor: 2,
    pretrainSteps: 500,
    pretrainBatch: 32,
    pretrainLr: 5e-4,
    warmup: 50,
    // A few hundred labelled poems: more passes than the paper's 2-4, which assumed larger sets.
    finetuneEpochs: 8,
    // Small BERTs want a larger fine-tuning rate than the paper's 2e-5..5e-5 for bert-base.
    finetuneLr: 4e-4,
    finetuneMaxLength: 80,
    finetuneBatch: 16,
  },
  quick: {
    corpusPoems: 3_000,
    labelledPerPoet: 148,
    vocabSize: 3_000,
    seqLen: 64,
    dupeFactor: 1,
    pretrainSteps: 40,
    pretrainBatch: 16,
    pretrainLr: 5e-4,
    warmup: 4,
    finetuneEpochs: 10,
    finetuneLr: 5e-4,
    finetuneMaxLength: 80,
    finetuneBatch: 16,
  },
};

const args = parseArgs(Deno.args, {
  boolean: ["quick", "keep-fleet", "help"],
  string: ["corpus", "data", "port-base", "text-column", "work-dir", "report-dir"],
  default: { "port-base": "auto" },
});
/** Everything the demo writes but the report: data, the fleet's store and logs. Wiped at each start. */
const WORK = resolve(args["work-dir"] ?? join(ROOT, ".bertforge", "demo"));
const STORE = join(WORK, "store");
const FLEET_PID = join(WORK, "fleet.pid");
const REPORT_DIR = resolve(args["report-dir"] ?? join(ROOT, "report"));
if (args.help) {
  console.log(
    "usage: deno task demo [--quick] [--corpus FILE] [--data TRAIN.csv[,EVAL.csv]] [--port-base N|auto] [--keep-fleet]\n" +
      "                      [--work-dir DIR (default .bertforge/demo)] [--report-dir DIR (default report)]",
  );
  Deno.exit(0);
}
const plan = args.quick ? PLANS.quick : PLANS.full;
/** `auto` lets the fleet pick a free base; the base it took is read from its ready line. */
let portBase = args["port-base"] === "auto" ? 0 : Number(args["port-base"]);
if (args["port-base"] !== "auto" && (!Number.isInteger(portBase) || portBase < 1024 || portBase > 65000)) {
  console.error(
    `demo: --port-base must be auto or an integer in [1024, 65000]: current value is ${args["port-base"]}`,
  );
  Deno.exit(2);
}

const bold = (s: string) => (Deno.stdout.isTerminal() ? `\x1b[1m${s}\x1b[0m` : s);
const started = performance.now();
const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)}s`;
function stage(title: string) {
  console.log(`\n${bold(`== ${title}`)}  (${elapsed()})`);
}

/** Runs one bertctl command as the user would type it; `capture` returns its stdout (with --json). */
async function bertctl(command: string[], options: { capture?: boolean } = {}): Promise<string> {
  const shown = ["deno", "task", "bertctl", "--port-base", String(portBase), ...command]
    .map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`)).join(" ");
  console.log(`$ ${shown}`);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "services/cli/bertctl.ts"), "--port-base", String(portBase), ...command],
    cwd: ROOT,
    stdout: options.capture ? "piped" : "inherit",
    stderr: "inherit",
  }).spawn();
  let code: number, text = "";
  if (options.capture) {
    const output = await child.output();
    code = output.code;
    text = new TextDecoder().decode(output.stdout);
  } else {
    code = (await child.status).code;
  }
  if (code !== 0) throw new Error(`bertctl ${command.slice(0, 2).join(" ")} failed with exit code ${code}`);
  if (options.capture && text.trim()) console.log(text.trimEnd().split("\n").map((l) => `  ${l}`).join("\n"));
  return text;
}

/** A fleet left behind by a killed run is stopped before anything else. */
async function stopLeftoverFleet() {
  const pid = Number(await Deno.readTextFile(FLEET_PID).catch(() => ""));
  if (!pid) return;
  try {
    Deno.kill(pid, "SIGTERM");
    console.log(`stopped the fleet a previous run left behind (pid ${pid})`);
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      Deno.kill(pid, "SIGCONT"); // throws once the process is gone
    }
    Deno.kill(pid, "SIGKILL");
  } catch { /* already gone */ }
  await Deno.remove(FLEET_PID).catch(() => {});
}

interface RunningFleet {
  child: Deno.ChildProcess;
  stop(): Promise<void>;
}

async function startFleetInBackground(): Promise<RunningFleet> {
  const logPath = join(WORK, "fleet.log");
  const log = await Deno.open(logPath, { write: true, create: true, truncate: true });
  const base = portBase === 0 ? "auto" : String(portBase);
  console.log(`$ deno task fleet --store ${STORE} --port-base ${base} > ${logPath} 2>&1 &`);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "services/cli/fleet.ts"),
      "--store",
      STORE,
      "--port-base",
      base,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await Deno.writeTextFile(FLEET_PID, String(child.pid));
  let ready = false;
  const readyPromise = Promise.withResolvers<void>();
  let stdoutText = "";
  const pump = async (stream: ReadableStream<Uint8Array>, isStdout: boolean) => {
    for await (const chunk of stream) {
      await log.write(chunk);
      if (ready || !isStdout) continue;
      stdoutText += new TextDecoder().decode(chunk);
      const line = stdoutText.split("\n").find((l) =>
        l.includes('"fleet":"ready"') && l.trim().endsWith("}")
      );
      if (line) {
        portBase = JSON.parse(line).port_base;
        ready = true;
        readyPromise.resolve();
      }
    }
  };
  const pumps = Promise.all([pump(child.stdout, true), pump(child.stderr, false)]);
  const status = child.status.then((s) => {
    if (!ready) {
      readyPromise.reject(new Error(`the fleet exited (code ${s.code}) before it was ready: see ${logPath}`));
    }
    return s;
  });
  const timeout = setTimeout(
    () => readyPromise.reject(new Error(`the fleet was not ready in 180 s: see ${logPath}`)),
    180_000,
  );
  try {
    await readyPromise.promise;
  } catch (error) {
    // The cause (a taken port, a crash) is in the log, which a newcomer would not open: show its end here.
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await Promise.race([pumps.catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
    const lines = (await Deno.readTextFile(logPath).catch(() => "")).trimEnd().split("\n").slice(-20);
    console.error(`the fleet's last log lines (${logPath}):\n${lines.map((l) => `  ${l}`).join("\n")}`);
    throw error;
  } finally {
    clearTimeout(timeout);
  }
  console.log(`fleet ready on port base ${portBase} (logs: ${logPath})`);
  let stopped: Promise<void> | undefined;
  return {
    child,
    stop() {
      stopped ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        const grace = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }, 15_000);
        await status;
        clearTimeout(grace);
        await pumps.catch(() => {});
        log.close();
        await Deno.remove(FLEET_PID).catch(() => {});
      })();
      return stopped;
    },
  };
}

interface Labelled {
  text: string;
  label: string;
}

async function readLabelledCsv(path: string): Promise<Labelled[]> {
  const rows = parseCsv(await Deno.readTextFile(path), { skipFirstRow: true }) as Record<string, string>[];
  const textColumn = args["text-column"] ??
    ["text", "text_a", "review", "sentence"].find((c) => c in (rows[0] ?? {}));
  if (!textColumn) {
    throw new Error(`${path}: no text column (expected one of text, text_a, review, sentence)`);
  }
  return rows.map((r) => ({ text: r[textColumn] ?? "", label: r.label ?? "" }));
}

/** How many held-out lines the pretrained model fills one masked character of. */
const FILL_MASK_LINES = 8;

/**
 * Masks, in the first verse line of held-out texts, the first character that is among the corpus's 100
 * commonest: a small BERT can learn those, where a rare character would only show that it cannot. The report
 * counts the lines where the true character is among the top 5, so a miss shows too.
 */
async function fillMaskExamples(corpusText: string, heldOut: Labelled[]) {
  const counts = new Map<string, number>();
  for (const c of corpusText) if (/\p{Script=Han}/u.test(c)) counts.set(c, (counts.get(c) ?? 0) + 1);
  const common = new Set([...counts].sort((a, b) => b[1] - a[1]).slice(0, 100).map(([c]) => c));
  const lines: { text: string; answer: string }[] = [];
  for (const example of heldOut) {
    const line = example.text.split(/[。！？]/)[0]!;
    const chars = Array.from(line);
    const at = chars.findIndex((c, i) => i > 0 && common.has(c));
    if (at < 0 || line.length < 5) continue;
    lines.push({
      text: [...chars.slice(0, at), "[MASK]", ...chars.slice(at + 1)].join("") + "。",
      answer: chars[at]!,
    });
    if (lines.length === FILL_MASK_LINES) break;
  }
  const file = join(WORK, "fill-mask.txt");
  await Deno.writeTextFile(file, lines.map((l) => l.text).join("\n") + "\n");
  const results =
    (await bertctl(["--json", "predict", "--model", "demo-bert", "--file", file, "--top-k", "5"], {
      capture: true,
    })).trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  return lines.map((line, i) => ({
    ...line,
    candidates: (results[i]?.predictions?.[0]?.candidates ?? []) as { token: string; score: number }[],
  }));
}

/**
 * Zero-shot: the pretrained model (no fine-tuning) asked whether a regular poem of the corpus has five or seven
 * characters a line, as a cloze ("…此詩[MASK]言。"), over poems of both widths, scored against the truth.
 */
async function zeroShotForms(corpusText: string) {
  const question = "five or seven characters a line (此詩[MASK]言)";
  const byWidth = new Map<string, string[]>([["五", []], ["七", []]]);
  for (const document of corpusText.split("\n\n")) {
    const form = formOf({ title: "", author: "", paragraphs: document.split("\n") });
    const bucket = form && byWidth.get(form[0]!);
    if (bucket && bucket.length < 8) bucket.push(document.replaceAll("\n", ""));
  }
  const poems = [...byWidth].flatMap(([width, texts]) => texts.map((text) => ({ text, width })));
  if (poems.length === 0) return { question, examples: 0, correct: 0, chance: 0.5 };
  const file = join(WORK, "zero-shot.txt");
  await Deno.writeTextFile(file, poems.map((p) => p.text).join("\n") + "\n");
  const results = (await bertctl([
    "--json",
    "predict",
    "--model",
    "demo-bert",
    "--zero-shot",
    "--labels",
    "五,七",
    "--template",
    "{text}此詩[MASK]言。",
    "--file",
    file,
  ], { capture: true })).trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  const correct = poems.filter((p, i) => results[i]?.label === p.width).length;
  return { question, examples: poems.length, correct, chance: 0.5, sample: poems[0]!.text };
}

async function main() {
  await Deno.mkdir(WORK, { recursive: true });
  await stopLeftoverFleet();
  // A fresh store each run: an interrupted run restarts cleanly instead of colliding with its own artifacts.
  await Deno.remove(STORE, { recursive: true }).catch(() => {});

  stage("1. data");
  let corpusPath: string, trainPath: string, evalPath: string;
  let taskName: string, taskId: string;
  if (args.corpus || args.data) {
    corpusPath = resolve(args.corpus ?? "");
    if (!args.corpus) throw new Error("--data needs --corpus (the text to pretrain on)");
    if (!args.data) {
      throw new Error("--corpus needs --data TRAIN.csv[,EVAL.csv] (label,text) to fine-tune on");
    }
    const [train, evalFile] = args.data.split(",");
    trainPath = resolve(train!);
    if (evalFile) evalPath = resolve(evalFile);
    else {
      // Hold out every 5th record, as the built-in task does (parsed as CSV: fields may hold newlines).
      const [header, ...records] = parseCsvRows(await Deno.readTextFile(trainPath));
      if (!header || records.length < 5) throw new Error(`${trainPath}: needs a header and at least 5 rows`);
      trainPath = join(WORK, "train.csv");
      evalPath = join(WORK, "eval.csv");
      await Deno.writeTextFile(trainPath, stringifyCsv([header, ...records.filter((_, i) => i % 5 !== 0)]));
      await Deno.writeTextFile(evalPath, stringifyCsv([header, ...records.filter((_, i) => i % 5 === 0)]));
    }
    taskName = "your labels";
    taskId = "your-labels";
    console.log(`corpus ${corpusPath}, train ${trainPath}, eval ${evalPath}`);
  } else {
    const data = await buildDemoData(ROOT, join(WORK, "data"), {
      corpusPoems: plan.corpusPoems,
      labelledPerPoet: plan.labelledPerPoet,
    });
    ({ corpusPath, trainPath, evalPath } = data);
    taskName = `the poet of a ${TASK_FORM} (${POETS.join(", ")})`;
    taskId = "poet-of-a-wuyan-lushi";
    console.log(
      `chinese-poetry: ${data.documents} poems (${(data.corpusBytes / 1e6).toFixed(1)} MB) as the corpus; ` +
        `${data.train.length} train / ${data.eval.length} held-out ${TASK_FORM} labelled with their poet ` +
        `(one form, so a line count cannot tell the poets apart)`,
    );
  }
  const train = await readLabelledCsv(trainPath);
  const heldOut = await readLabelledCsv(evalPath);

  stage("2. the fleet");
  const fleet = await startFleetInBackground();
  const onSignal = () => {
    console.log("\ninterrupted: stopping the fleet");
    fleet.stop().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  try {
    stage("3. WordPiece vocabulary");
    await bertctl([
      "vocab",
      "train",
      "--corpus",
      corpusPath,
      "--size",
      String(plan.vocabSize),
      "--name",
      "demo-vocab",
    ]);
    const sample = heldOut[0]?.text ?? "白日依山盡，黃河入海流。";
    await bertctl(["tokenize", "--vocab", "demo-vocab", "--text", sample.slice(0, 24)], { capture: true });

    stage("4. pretraining shards (NSP pairs, whole-word masking)");
    await bertctl([
      "shards",
      "build",
      "--corpus",
      corpusPath,
      "--vocab",
      "demo-vocab",
      "--seq-len",
      String(plan.seqLen),
      "--wwm",
      "--dupe-factor",
      String(plan.dupeFactor),
      "--name",
      "demo-shards",
    ]);
    await bertctl(["shards", "inspect", "demo-shards", "--n", "1"]);

    stage("5. pretraining (MLM + NSP)");
    await bertctl([
      "train",
      "pretrain",
      "--shards",
      "demo-shards",
      "--arch",
      "bert-mini",
      "--steps",
      String(plan.pretrainSteps),
      "--batch",
      String(plan.pretrainBatch),
      "--lr",
      String(plan.pretrainLr),
      "--warmup",
      String(plan.warmup),
      "--eval-every",
      String(Math.max(10, Math.floor(plan.pretrainSteps / 10))),
      "--name",
      "demo-bert",
    ]);

    stage(`6. fine-tuning on ${taskName}`);
    await bertctl([
      "train",
      "finetune",
      "--base",
      "demo-bert",
      "--task",
      "classify",
      "--train",
      trainPath,
      "--eval",
      evalPath,
      "--epochs",
      String(plan.finetuneEpochs),
      "--lr",
      String(plan.finetuneLr),
      "--max-length",
      String(plan.finetuneMaxLength),
      "--batch",
      String(plan.finetuneBatch),
      // The mean of the token states reads every character from the first step; [CLS] of a briefly
      // pretrained encoder starts out nearly the same for every poem, and 400 poems do not move it far.
      "--pooling",
      "mean",
      "--name",
      "demo-classifier",
    ]);

    stage("7. evaluation, with the baselines beside it");
    // The held-out poems the model gets wrong, the most confident first, for the reader to look at.
    const mistakesPath = join(WORK, "mistakes.jsonl");
    const metrics = JSON.parse(
      (await bertctl([
        "--json",
        "eval",
        "--model",
        "demo-classifier",
        "--task",
        "classify",
        "--data",
        evalPath,
        "--errors",
        mistakesPath,
      ], {
        capture: true,
      })).trim().split("\n").at(-1)!,
    );
    const linear = trainLinearBaseline(train);
    const linearAccuracy = heldOut.filter((e) => linear.predict(e.text).label === e.label).length /
      heldOut.length;
    const majority = majorityBaseline(train, heldOut);
    console.log(
      `accuracy on ${heldOut.length} held-out examples: bertforge ${(metrics.accuracy * 100).toFixed(1)}%, ` +
        `linear char-bigram ${(linearAccuracy * 100).toFixed(1)}%, majority class ${
          (majority.accuracy * 100).toFixed(1)
        }%`,
    );
    console.log(`${metrics.errors} held-out examples wrong, listed most confident first in ${mistakesPath}`);

    stage("8. serving: predictions over gRPC");
    const examples = heldOut.slice(0, 4);
    const predictionsFile = join(WORK, "predict.txt");
    await Deno.writeTextFile(predictionsFile, examples.map((e) => e.text).join("\n") + "\n");
    const predictions =
      (await bertctl(["--json", "predict", "--model", "demo-classifier", "--file", predictionsFile], {
        capture: true,
      })).trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    const corpusText = await Deno.readTextFile(corpusPath);
    const fillMask = await fillMaskExamples(corpusText, heldOut);
    const zeroShot = await zeroShotForms(corpusText);

    stage("9. serving: the same model over HTTP/JSON");
    const url = `http://127.0.0.1:${portBase + 5}/v1/models/demo-classifier:classify`;
    console.log(`$ curl -s ${url} -d '{"text": "${examples[0]?.text ?? sample}"}'`);
    const http = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: examples[0]?.text ?? sample }),
    });
    const httpBody = await http.json();
    console.log(`  HTTP ${http.status} ${JSON.stringify(httpBody).slice(0, 300)}`);
    if (!http.ok) throw new Error(`HTTP classify answered ${http.status}`);

    stage("10. report");
    const reportDir = REPORT_DIR;
    const summary = await writeReport({
      reportDir,
      storeDir: STORE,
      models: ["demo-bert", "demo-classifier"],
      artifacts: [
        { kind: "vocab", prefix: "vocabs/demo-vocab/" },
        { kind: "shards", prefix: "shards/demo-shards/" },
      ],
      taskName,
      taskId,
      evaluation: {
        examples: heldOut.length,
        bertforge: metrics,
        linearAccuracy,
        majority,
      },
      predictions: examples.map((e, i) => ({ text: e.text, expected: e.label, got: predictions[i] })),
      mistakes: (await Deno.readTextFile(mistakesPath)).split("\n").filter(Boolean).map((line) =>
        JSON.parse(line)
      ),
      fillMask,
      zeroShot,
      http: { url, status: http.status, body: httpBody },
      elapsedSeconds: (performance.now() - started) / 1000,
      quick: !!args.quick,
    });
    console.log(summary);
    console.log(`\nreport written to ${join(reportDir, "index.html")} (total ${elapsed()})`);
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    if (!args["keep-fleet"]) {
      stage("stopping the fleet");
      await fleet.stop();
    }
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (error) {
    console.error(`\ndemo failed: ${(error as Error).message}`);
    console.error(`fleet logs: ${join(WORK, "fleet.log")}`);
    Deno.exit(1);
  }
}

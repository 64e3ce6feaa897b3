/**
 * The demo's report: a short text summary for the terminal and `report/index.html` with the pictures the
 * trainer published beside each model (loss and learning-rate curves, MLM/NSP accuracy over steps, the
 * confusion matrix), copied next to the page so it opens from disk. Everything is read from the store folder
 * the demo's fleet wrote, so the report shows exactly what was published.
 */
import { join } from "@std/path";
import { escapeXml } from "../../shared/report/mod.ts";

export interface ReportInput {
  reportDir: string;
  storeDir: string;
  /** Model names; the latest version of each is reported. */
  models: string[];
  artifacts: { kind: string; prefix: string }[];
  taskName: string;
  /** The task's short id in summary.json, e.g. "poem-splice". */
  taskId: string;
  evaluation: {
    examples: number;
    bertforge: Record<string, unknown>;
    linearAccuracy: number;
    majority: { label: string; accuracy: number };
  };
  predictions: { text: string; expected: string; got: Record<string, unknown> | undefined }[];
  /** The held-out examples the model gets wrong, most confident first (`bertctl eval --errors`). */
  mistakes: { text: string; gold: string[]; predicted: string[]; confidence?: number }[];
  /** Lines with one character masked, and whether the model put the true one in its top candidates. */
  fillMask: { text: string; answer: string; candidates: { token: string; score: number }[] }[];
  /** The pretrained model asked a cloze question per held-out text, without fine-tuning. */
  zeroShot: { question: string; examples: number; correct: number; chance: number; sample?: string };
  http: { url: string; status: number; body: unknown };
  elapsedSeconds: number;
  quick: boolean;
}

interface ModelReport {
  name: string;
  version: string;
  prefix: string;
  metrics: Record<string, unknown>;
  lineage: Record<string, unknown>;
  pictures: string[];
}

const PICTURES = ["loss.svg", "accuracy.svg", "confusion.svg"];

async function readJson(path: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch {
    return {};
  }
}

async function latestVersion(storeDir: string, name: string): Promise<string | undefined> {
  const versions: string[] = [];
  try {
    for await (const entry of Deno.readDir(join(storeDir, "models", name))) {
      if (entry.isDirectory) versions.push(entry.name);
    }
  } catch {
    return undefined;
  }
  return versions.sort().at(-1);
}

async function modelReport(
  storeDir: string,
  reportDir: string,
  name: string,
): Promise<ModelReport | undefined> {
  const version = await latestVersion(storeDir, name);
  if (!version) return undefined;
  const dir = join(storeDir, "models", name, version);
  const pictures: string[] = [];
  for (const picture of PICTURES) {
    const target = `${name}-${picture}`;
    try {
      await Deno.copyFile(join(dir, picture), join(reportDir, target));
      pictures.push(target);
    } catch { /* this model has no such picture */ }
  }
  return {
    name,
    version,
    prefix: `models/${name}/${version}/`,
    metrics: await readJson(join(dir, "metrics.json")),
    lineage: await readJson(join(dir, "lineage.json")),
    pictures,
  };
}

/** "vocab demo-vocab ← corpus corpus (sha256 063a71…)" from a lineage.json of any artifact. */
function lineageLine(lineage: Record<string, unknown>): string {
  const inputs = (lineage.inputs as Record<string, unknown>[] | undefined) ?? [];
  return inputs.map((input) => {
    const ref = (input.ref as Record<string, unknown> | undefined) ?? input;
    const hash = (ref.sha256 as string | undefined) ??
      ((input.parts as { sha256: string }[] | undefined)?.[0]?.sha256);
    return `${input.role} ${ref.name ?? ref.prefix ?? "?"}${hash ? ` (sha256 ${hash.slice(0, 12)}…)` : ""}`;
  }).join(", ") || "(no recorded inputs)";
}

/** The headline figures, also written as report/summary.json. */
export interface Summary {
  task: string;
  metric: "accuracy";
  bertforge: number;
  baselines: { linear: number; majority: number };
  quick: boolean;
  seconds: number;
}

/**
 * One sentence on how the BERT stands against the baselines, never praise it has not earned: ahead only when
 * above every baseline, and a quick run is called the smoke test it is.
 */
export function verdict(summary: Summary): { ahead: boolean; text: string } {
  const { bertforge, baselines } = summary;
  const points = (v: number) => `${Math.abs((bertforge - v) * 100).toFixed(1)} points`;
  const ahead = bertforge > baselines.linear && bertforge > baselines.majority;
  let text = ahead
    ? `The BERT beats both baselines: ${points(baselines.linear)} above the linear model.`
    : bertforge > baselines.majority
    ? `The BERT is behind the linear model by ${points(baselines.linear)} ` +
      `(${points(baselines.majority)} above always answering the majority class).`
    : `The BERT has learned nothing useful: it is no better than always answering the majority class.`;
  if (summary.quick) {
    text += " This was the quick run, a smoke test of the pipeline with a model pretrained for a few dozen" +
      " steps: run `make run` for a result worth comparing.";
  }
  return { ahead, text };
}

const percent = (v: unknown) => (typeof v === "number" ? `${(v * 100).toFixed(1)}%` : "n/a");
const number = (v: unknown, digits = 0) => (typeof v === "number" ? v.toFixed(digits) : "n/a");

/** The most confident mistakes, where a wrong gold label or a blind spot of the model shows first. */
const MISTAKES_SHOWN = 10;

/** `total` counts every mistake; the list may hold fewer (`eval --errors` lists up to --max-errors). */
function mistakesSection(mistakes: ReportInput["mistakes"], total: number): string {
  if (total === 0) return "<p>No held-out example is wrong.</p>";
  const rows = mistakes.slice(0, MISTAKES_SHOWN).map((m) =>
    `<tr><td>${escapeXml(m.predicted.join(", "))}</td><td>${escapeXml(m.gold.join(", "))}</td><td>${
      m.confidence === undefined ? "" : percent(m.confidence)
    }</td><td>${escapeXml([...m.text].slice(0, 80).join(""))}</td></tr>`
  );
  return `<h2>The ${rows.length} most confident of ${total} mistakes</h2>
<table class="mistakes">
<tr><th>predicted</th><th>gold</th><th>confidence</th><th>text</th></tr>
${rows.join("\n")}
</table>`;
}

export async function writeReport(input: ReportInput): Promise<string> {
  await Deno.mkdir(input.reportDir, { recursive: true });
  const models = (await Promise.all(input.models.map((m) => modelReport(input.storeDir, input.reportDir, m))))
    .filter((m): m is ModelReport => m !== undefined);
  const artifacts = await Promise.all(input.artifacts.map(async (a) => ({
    ...a,
    lineage: await readJson(join(input.storeDir, a.prefix, "lineage.json")),
  })));
  const pretrained = models.find((m) => m.metrics.task === "pretrain");
  const classifier = models.find((m) => m.metrics.task !== "pretrain");
  const backend = (pretrained?.lineage.settings as Record<string, string> | undefined)?.backend ?? "unknown";
  const ev = input.evaluation;

  const lines: string[] = [];
  lines.push("artifacts and their lineage:");
  for (const a of artifacts) {
    lines.push(`  ${a.kind.padEnd(7)} ${a.prefix.padEnd(36)} ← ${lineageLine(a.lineage)}`);
  }
  for (const m of models) lines.push(`  model   ${m.prefix.padEnd(36)} ← ${lineageLine(m.lineage)}`);
  if (pretrained) {
    const mlm = pretrained.metrics.curves as Record<string, [number, number][]> | undefined;
    const firstMlm = mlm?.mlm_accuracy?.[0]?.[1];
    lines.push(
      `pretraining: ${pretrained.metrics.steps} steps on the ${backend} backend at ${
        number(pretrained.metrics.tokens_per_s)
      } tokens/s; MLM accuracy ${percent(firstMlm)} at the first step → ${
        percent(pretrained.metrics.eval_mlm_accuracy)
      } held out, NSP ${percent(pretrained.metrics.eval_nsp_accuracy)}, perplexity ${
        number(pretrained.metrics.eval_perplexity, 1)
      }`,
    );
  }
  if (classifier) {
    lines.push(
      `fine-tuning: ${classifier.metrics.steps} steps at ${number(classifier.metrics.tokens_per_s)} tokens/s`,
    );
  }
  const headline: Summary = {
    task: input.taskId,
    metric: "accuracy",
    bertforge: Number(ev.bertforge.accuracy ?? 0),
    baselines: { linear: ev.linearAccuracy, majority: ev.majority.accuracy },
    quick: input.quick,
    seconds: Math.round(input.elapsedSeconds),
  };
  const { ahead, text: verdictText } = verdict(headline);
  lines.push(
    `${input.taskName}, ${ev.examples} held-out examples: accuracy bertforge ${
      percent(ev.bertforge.accuracy)
    } ` +
      `(macro F1 ${percent(ev.bertforge.macro_f1)}) | linear char-bigram ${percent(ev.linearAccuracy)} | ` +
      `majority class '${ev.majority.label}' ${percent(ev.majority.accuracy)}`,
  );
  lines.push(verdictText);
  lines.push("predictions (gRPC):");
  for (const p of input.predictions) {
    lines.push(`  ${String(p.got?.label ?? "?").padEnd(6)} (expected ${p.expected})  ${p.text.slice(0, 40)}`);
  }
  const hits = input.fillMask.filter((f) => f.candidates.some((c) => c.token === f.answer)).length;
  lines.push(
    `fill-mask: the masked character is among the top ${
      input.fillMask[0]?.candidates.length ?? 0
    } candidates in ${hits} of ${input.fillMask.length} held-out lines`,
  );
  for (const f of input.fillMask.slice(0, 3)) {
    lines.push(
      `  ${f.text} (was ${f.answer}) → ${
        f.candidates.map((c) => `${c.token} ${(c.score * 100).toFixed(1)}%`).join(", ") || "n/a"
      }`,
    );
  }
  const zs = input.zeroShot;
  lines.push(
    `zero-shot (MLM head, no fine-tuning), ${zs.question}: ${zs.correct} of ${zs.examples} right ` +
      `(${percent(zs.correct / Math.max(1, zs.examples))}; chance ${percent(zs.chance)})` +
      (zs.correct / Math.max(1, zs.examples) <= zs.chance + 0.05 ? ": no better than chance" : ""),
  );
  lines.push(`HTTP: POST ${input.http.url} → ${input.http.status}`);
  lines.push(
    `total time ${input.elapsedSeconds.toFixed(0)} s${
      input.quick ? " (quick mode: a smoke test, not a result)" : ""
    }`,
  );
  const summary = lines.join("\n");

  const figure = (m: ModelReport) =>
    m.pictures.map((p) =>
      `<figure><img src="${p}" alt="${escapeXml(p)}"><figcaption>${escapeXml(p)}</figcaption></figure>`
    )
      .join("\n");
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bertforge demo report</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
  h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
  table { border-collapse: collapse; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #eee; text-align: left; }
  figure { display: inline-block; margin: .5rem; } img { max-width: 520px; border: 1px solid #eee; }
  pre { background: #f6f6f6; padding: 1rem; overflow-x: auto; }
  .good { color: #0a7a2f; font-weight: 600; } .behind { color: #a33; font-weight: 600; }
  .verdict { font-size: 1.1rem; }
</style>
</head>
<body>
<h1>bertforge demo report</h1>
<p>Pretrained a BERT on the corpus, fine-tuned it on ${
    escapeXml(input.taskName)
  }, and served it over gRPC and HTTP.
Generated ${new Date().toISOString()} in ${input.elapsedSeconds.toFixed(0)} s${
    input.quick ? " (quick mode: a smoke test, not a result)" : ""
  }.</p>
<h2>Results on ${ev.examples} held-out examples</h2>
<p class="verdict ${ahead ? "good" : "behind"}">${escapeXml(verdictText)}</p>
<table>
<tr><th>model</th><th>accuracy</th><th>macro F1</th></tr>
<tr><td>bertforge (${escapeXml(classifier?.prefix ?? "?")})</td><td class="${ahead ? "good" : "behind"}">${
    percent(ev.bertforge.accuracy)
  }</td><td>${percent(ev.bertforge.macro_f1)}</td></tr>
<tr><td>linear model on character unigrams + bigrams</td><td>${percent(ev.linearAccuracy)}</td><td></td></tr>
<tr><td>majority class (${escapeXml(ev.majority.label)})</td><td>${
    percent(ev.majority.accuracy)
  }</td><td></td></tr>
</table>
${mistakesSection(input.mistakes, Number(ev.bertforge.errors ?? input.mistakes.length))}
${
    models.map((m) =>
      `<h2>${escapeXml(m.prefix)}</h2>\n<p>${escapeXml(lineageLine(m.lineage))}</p>\n${figure(m)}`
    ).join("\n")
  }
<h2>Summary</h2>
<pre>${escapeXml(summary)}</pre>
</body>
</html>
`;
  await Deno.writeTextFile(join(input.reportDir, "index.html"), html);
  await Deno.writeTextFile(join(input.reportDir, "summary.txt"), summary + "\n");
  await Deno.writeTextFile(join(input.reportDir, "summary.json"), JSON.stringify(headline, null, 2) + "\n");
  return summary;
}

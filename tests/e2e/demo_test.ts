/**
 * `make run QUICK=1` end to end, from a clean store: the demo drives every service through bertctl, so this
 * checks each stage's published artifacts, the report, and that the served model answered over gRPC and HTTP.
 */
import { assert, assertEquals, assertGreater, assertStringIncludes } from "@std/assert";
import { fromFileUrl, join } from "@std/path";
import { POETS } from "../../services/cli/demo/poetry.ts";

const ROOT = fromFileUrl(new URL("../..", import.meta.url));

async function readJson(path: string) {
  return JSON.parse(await Deno.readTextFile(path));
}

async function onlyVersion(dir: string): Promise<string> {
  const versions = (await Array.fromAsync(Deno.readDir(dir))).filter((e) => e.isDirectory).map((e) => e.name);
  assertEquals(versions.length, 1, `one published version in ${dir}: ${versions}`);
  return join(dir, versions[0]!);
}

Deno.test({
  name:
    "make run QUICK=1: vocab, shards, models, a report that says how the BERT stands, gRPC and HTTP answers",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await Deno.makeTempDir({ prefix: "bertforge-demo-" });
    const reportDir = join(work, "report");
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(ROOT, "services/cli/demo.ts"),
        "--quick",
        "--work-dir",
        join(work, "demo"),
        "--report-dir",
        reportDir,
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(stdout);
    const err = new TextDecoder().decode(stderr);
    assertEquals(code, 0, `demo failed:\n${out.slice(-4000)}\n${err.slice(-4000)}`);

    const store = join(work, "demo", "store");
    // Vocabulary and shards were published (manifest last) with their lineage.
    const vocab = await Deno.readTextFile(join(store, "vocabs/demo-vocab/vocab.txt"));
    assertEquals(vocab.split("\n").slice(0, 5), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
    const shards = await readJson(join(store, "shards/demo-shards/MANIFEST.json"));
    assert(shards.parts.length >= 2, "shards manifest lists its parts");
    // The pretrained model: HF layout, and MLM accuracy rose above its first step.
    const bert = await onlyVersion(join(store, "models/demo-bert"));
    for (
      const file of [
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "tokenizer.json",
        "lineage.json",
        "loss.svg",
      ]
    ) {
      assert((await Deno.stat(join(bert, file))).size > 0, `${file} in ${bert}`);
    }
    const pretrain = await readJson(join(bert, "metrics.json"));
    assertGreater(pretrain.eval_mlm_accuracy, pretrain.curves.mlm_accuracy[0][1]);
    // The classifier: labels in config.json, a confusion matrix, lineage naming its base model.
    const classifier = await onlyVersion(join(store, "models/demo-classifier"));
    const config = await readJson(join(classifier, "config.json"));
    assertEquals(Object.values(config.id2label).sort(), [...POETS].sort());
    const lineage = await readJson(join(classifier, "lineage.json"));
    assert(JSON.stringify(lineage.inputs).includes("demo-bert"), "classifier lineage names its base model");
    assert((await Deno.stat(join(classifier, "confusion.svg"))).isFile);
    // bertctl eval --errors listed every held-out mistake the metrics count, each a wrong label.
    const wrong = Number(/(\d+) held-out examples wrong/.exec(out)?.[1]);
    const mistakes = (await Deno.readTextFile(join(work, "demo", "mistakes.jsonl"))).split("\n").filter(
      Boolean,
    )
      .map((line) => JSON.parse(line));
    assertEquals(mistakes.length, wrong);
    for (const m of mistakes) assert(m.gold[0] !== m.predicted[0] && m.text.length > 0, JSON.stringify(m));
    // The served model answered over both protocols, and the report holds the pictures.
    assertStringIncludes(out, `"model":{"name":"demo-classifier"`);
    assertStringIncludes(out, "HTTP 200");
    const html = await Deno.readTextFile(join(reportDir, "index.html"));
    assertStringIncludes(html, "demo-classifier-confusion.svg");
    assertStringIncludes(html, "demo-bert-loss.svg");
    // The report shows the most confident mistakes (or says there are none).
    if (mistakes.length === 0) assertStringIncludes(html, "No held-out example is wrong.");
    else {
      assertStringIncludes(html, `most confident of ${mistakes.length} mistakes`);
      assertEquals(
        html.split('<table class="mistakes">')[1]!.split("</table>")[0]!.split("<tr><td>").length - 1,
        Math.min(mistakes.length, 10),
      );
    }
    assertStringIncludes(await Deno.readTextFile(join(reportDir, "demo-bert-loss.svg")), "<svg");
    // The headline figures, and a verdict that calls a win only a win over every baseline.
    const summary = await readJson(join(reportDir, "summary.json"));
    assertEquals(Object.keys(summary).sort(), [
      "baselines",
      "bertforge",
      "metric",
      "quick",
      "seconds",
      "task",
    ]);
    assertEquals([summary.task, summary.metric, summary.quick], ["poet-of-a-wuyan-lushi", "accuracy", true]);
    // Four poets in equal numbers (the held-out fifth is within one poem of balanced): the majority is chance.
    assert(Math.abs(summary.baselines.majority - 0.25) < 0.01, JSON.stringify(summary));
    assert(summary.bertforge >= 0 && summary.bertforge <= 1 && summary.seconds > 0, JSON.stringify(summary));
    const ahead = summary.bertforge > summary.baselines.linear;
    assertStringIncludes(html, `<p class="verdict ${ahead ? "good" : "behind"}">`);
    if (!ahead) assertStringIncludes(html, "behind the linear model");
    assertStringIncludes(html, "smoke test");
    // The port base was found, not fixed: the demo says which one the fleet took.
    assert(/fleet ready on port base \d+/.test(out), out.slice(0, 2000));
    // The fleet is gone: its pid file was removed and nothing listens any more.
    await Deno.stat(join(work, "demo", "fleet.pid")).then(
      () => assert(false, "fleet.pid left behind"),
      () => {},
    );
    await Deno.remove(work, { recursive: true });
  },
});

/**
 * `deno task bench zero_shot_quality --store DIR --model NAME [--template T] [--words 好,差] [--calibrate]`: zero-shot sentiment
 * (issue 6, the seed's FAQ) on the ChnSentiCorp split that `trainer_quality` holds out (10%, seed 42), scored
 * by the inference service's ZeroShot over HTTP with a pretrained model's MLM head: no fine-tuning. Prints one
 * JSON line with the accuracy next to the majority class. Not part of `make bench` (needs a pretrained model).
 */
import { parseArgs } from "@std/cli";
import { loadSettings } from "../../services/shared/config/settings.ts";
import { parseTextExamples } from "../../services/shared/data/formats.ts";
import { trainEvalSplit } from "../../services/shared/data/split.ts";
import { startInference } from "../../services/inference/main.ts";

const DATA = new URL("../../../shared/data/", import.meta.url).pathname;

export async function main(argv: string[]) {
  const args = parseArgs(argv, {
    string: ["store", "model", "template", "words"],
    boolean: ["calibrate"],
    default: {
      store: ".bertforge/quality",
      model: "quality-mini-2",
      template: "{text}总之很[MASK]。",
      words: "好,差",
    },
  });
  const [positiveWord, negativeWord] = String(args.words).split(",");
  const csv = await Deno.readTextFile(`${DATA}chnsenticorp/train.csv`);
  const all = parseTextExamples(csv, { file: "chnsenticorp/train.csv", task: "classify" });
  const heldOut = trainEvalSplit(all, { evalFraction: 0.1, seed: 42 }).eval;

  const settings = loadSettings("inference", {
    args: ["--port", "0", "--http-port", "0", "--store", String(args.store), "--log-level", "warn"],
    env: () => undefined,
  });
  const service = await startInference(settings, { handleSignals: false });
  try {
    let correct = 0;
    const batch = 16;
    for (let i = 0; i < heldOut.length; i += batch) {
      const slice = heldOut.slice(i, i + batch);
      const response = await fetch(`${service.http.url}/v1/models/${args.model}:zeroShot`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          texts: slice.map((e) => e.text),
          options: {
            template: args.template,
            labels: ["1", "0"],
            label_words: [positiveWord, negativeWord],
            calibrate: args.calibrate,
          },
        }),
      });
      const body = await response.json();
      if (!response.ok) throw new Error(`zeroShot answered ${response.status}: ${JSON.stringify(body)}`);
      const results = body.results as { label: string }[];
      results.forEach((r, k) => (correct += r.label === slice[k]!.labels[0] ? 1 : 0));
    }
    const positives = heldOut.filter((e) => e.labels[0] === "1").length;
    console.log(JSON.stringify({
      bench: "zero_shot_quality",
      impl: "bertforge",
      model: args.model,
      template: args.template,
      calibrate: args.calibrate,
      label_words: [positiveWord, negativeWord],
      examples: heldOut.length,
      accuracy: correct / heldOut.length,
      majority_accuracy: Math.max(positives, heldOut.length - positives) / heldOut.length,
    }));
  } finally {
    await service.shutdown();
  }
}

if (import.meta.main) await main(Deno.args);

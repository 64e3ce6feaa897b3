/**
 * `deno task bench finetune [--task ner,classify] [--steps 40] [--batch 32] [--max-length 128]
 *   [--arch bert-mini] [--seed 42] [--threads N] [--torch-threads 2] [--no-torch] [--synthetic]`
 *
 * A real fine-tuning job, run the way a user runs it (`runFinetuneJob`: datasets and a base model in a
 * store, encoding, batches grouped by length and padded to their own longest row, evaluation, checkpoint,
 * publish), measured in real (non-padding) tokens per second, against what a Hugging Face user gets from
 * PyTorch on the same sentences (tests/bench/finetune_torch.py, /usr/bin/python3, skipped when `import torch`
 * fails): the same bert-mini, AdamW, batch size and step count, random batches padded to their longest row.
 *
 * Data: People's Daily NER sentences (../shared/data/peoples-daily-ner/train.bio when present, else
 * sentences generated deterministically with its length distribution: log-normal, median 41, mean ~47,
 * p99 ~141 characters). A seeded draw of batch x steps sentences is the training set, 32 more the eval set
 * (NER sentences longer than max length become several windows, so the job may take a step more; both
 * sides run the job's count). `ner` tags them; `classify` labels each sentence with its first entity's type
 * (or "none"). The vocab is the drawn sentences' characters (~2,650 entries at the defaults), the base model
 * a randomly initialised bert-mini (throughput does not depend on the weights).
 *
 *   --task           comma-separated tasks, each a job plus its PyTorch reference
 *   --steps          training sentences = batch x steps, one epoch; on 2 shared cores the defaults take
 *                    ~10-20 s per job and ~30-45 s per PyTorch reference, ~2 minutes for both tasks
 *   --batch          batch size of both sides
 *   --max-length     the job's max length (longer NER sentences are windowed, longer texts truncated)
 *   --arch           preset of the randomly initialised base model
 *   --seed           the sentence draw, the job's seed (batch order, dropout) and torch's
 *   --threads        the native engine's threads (its default otherwise)
 *   --torch-threads  torch.set_num_threads for the reference
 *   --no-torch       the job only
 *   --synthetic      generated sentences even when train.bio is present
 *
 * Timing: steps 2..S of the job (the first pays for allocation), each the time between the job's
 * consecutive step events: batch assembly plus the training step (evaluation, checkpoint and publish come
 * after step S). The batches are rebuilt here with the job's own epochBatches and makeBatch to count their
 * tokens and padding, checked against the tokens/s of the job's step events (a mismatch goes to stderr).
 * Torch times its steps 2..S the same way, collation included. `padding_fraction`: the share of computed
 * positions (B x each batch's padded length, over all S steps) that is padding; the job's includes
 * makeBatch's rounding of the length up to a multiple of 8. On a shared machine the sums carry its noise.
 *
 * Prints per task `{"bench":"finetune_job","task":..,"impl":"bertforge",..,"tokens_per_s":..,
 * "padding_fraction":..}`, the same line with `"impl":"pytorch"`, then
 * `{"bench":"finetune_job_ratio","task":..,"vs_torch":..}`.
 */
import { parseArgs } from "@std/cli";
import { LocalStore } from "../../services/shared/store/local.ts";
import { presetConfig } from "../../services/shared/model/config.ts";
import { initWeights } from "../../services/shared/model/checkpoint.ts";
import type { HeadSpec } from "../../services/shared/engine/engine.ts";
import {
  encodeNerExamples,
  encodeTextExamples,
  epochBatches,
  LabelSet,
  type NerExample,
  type TextExample,
} from "../../services/shared/data/mod.ts";
import { Rng } from "../../services/shared/shards/rng.ts";
import { WordPieceTokenizer } from "../../services/shared/wordpiece/mod.ts";
import { type FinetuneTask, runFinetuneJob } from "../../services/trainer/finetune.ts";
import { type Feature, makeBatch } from "../../services/trainer/evaluate.ts";
import { readDataset, storeDataset } from "../../services/trainer/datasets.ts";
import { loadModel, publishModel } from "../../services/trainer/models.ts";
import type { TrainerEvent } from "../../services/trainer/loop.ts";

const BIO = new URL("../../../shared/data/peoples-daily-ner/train.bio", import.meta.url).pathname;
const EVAL_SENTENCES = 32;

/** One sentence: a character and its BIO tag per position. */
interface Sentence {
  chars: string[];
  tags: string[];
}

async function peoplesDaily(): Promise<Sentence[] | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(BIO);
  } catch {
    return null;
  }
  return text.split(/\n\s*\n/).map((block) => {
    const s: Sentence = { chars: [], tags: [] };
    for (const line of block.split("\n")) {
      const [char, tag] = line.trim().split(/\s+/);
      if (char && tag) {
        s.chars.push(char);
        s.tags.push(tag);
      }
    }
    return s;
  }).filter((s) => s.chars.length > 0);
}

/**
 * People's Daily-shaped sentences: lengths log-normal (median 41, sigma 0.535: mean ~47, p90 ~81, p99 ~141,
 * as train.bio), characters from 3,000 CJK code points, a PER/LOC/ORG entity of 2-4 characters at 5% of
 * positions.
 */
function synthetic(count: number, seed: number): Sentence[] {
  const rng = Rng.seeded(seed, 0x5e17);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.random())) * Math.cos(2 * Math.PI * rng.random());
  const char = () => String.fromCodePoint(0x4e00 + rng.randint(0, 2999));
  return Array.from({ length: count }, () => {
    const n = Math.min(600, Math.max(2, Math.round(Math.exp(Math.log(41) + 0.535 * gauss()))));
    const s: Sentence = { chars: [], tags: [] };
    while (s.chars.length < n) {
      if (rng.random() < 0.05) {
        const type = ["PER", "LOC", "ORG"][rng.randint(0, 2)]!;
        const length = Math.min(rng.randint(2, 4), n - s.chars.length);
        for (let k = 0; k < length; k++) {
          s.chars.push(char());
          s.tags.push(`${k ? "I" : "B"}-${type}`);
        }
      } else {
        s.chars.push(char());
        s.tags.push("O");
      }
    }
    return s;
  });
}

/** A character vocab: the specials, then each (lowercased) character, and its `##` piece unless it is CJK. */
function charVocab(sentences: Sentence[]): string {
  const chars = new Set<string>();
  for (const s of sentences) for (const c of s.chars) chars.add(c.toLowerCase());
  const tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
  for (const c of [...chars].sort()) {
    tokens.push(c);
    // Latin letters and digits group into words, which WordPiece splits into a first piece and ##pieces.
    if (!/\p{Script=Han}/u.test(c)) tokens.push(`##${c}`);
  }
  return tokens.join("\n") + "\n";
}

function datasetFile(task: FinetuneTask, sentences: Sentence[]): { file: string; text: string } {
  if (task === "ner") {
    const text = sentences.map((s) => s.chars.map((c, i) => `${c} ${s.tags[i]}`).join("\n")).join("\n\n");
    return { file: "data.bio", text: text + "\n" };
  }
  const lines = sentences.map((s) => {
    const first = s.tags.find((t) => t.startsWith("B-"));
    return JSON.stringify({ text: s.chars.join(""), label: first ? first.slice(2) : "none" });
  });
  return { file: "data.jsonl", text: lines.join("\n") + "\n" };
}

async function torchReference(spec: Record<string, unknown>): Promise<Record<string, unknown> | null> {
  const script = new URL("./finetune_torch.py", import.meta.url).pathname;
  const path = await Deno.makeTempFile({ prefix: "bf-bench-finetune-", suffix: ".json" });
  try {
    await Deno.writeTextFile(path, JSON.stringify(spec));
    const out = await new Deno.Command("/usr/bin/python3", { args: [script, path], stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (!out.success || !text) {
      console.error(`finetune_torch.py failed: ${new TextDecoder().decode(out.stderr).slice(-500)}`);
      return null;
    }
    return JSON.parse(text.split("\n").at(-1)!);
  } catch (e) {
    console.error(`cannot run /usr/bin/python3 for the PyTorch reference: ${(e as Error).message}`);
    return null;
  } finally {
    await Deno.remove(path).catch(() => {});
  }
}

async function benchTask(
  task: FinetuneTask,
  sentences: Sentence[],
  o: {
    B: number;
    T: number;
    arch: string;
    seed: number;
    threads?: number;
    torchThreads: number;
    torch: boolean;
  },
  source: string,
): Promise<void> {
  const { B, T, arch, seed } = o;
  const dir = await Deno.makeTempDir({ prefix: "bf-bench-finetune-" });
  const store = new LocalStore(dir);
  try {
    const train = sentences.slice(0, sentences.length - EVAL_SENTENCES);
    const evalSet = sentences.slice(sentences.length - EVAL_SENTENCES);
    const vocabText = charVocab(sentences);
    const config = presetConfig(arch, vocabText.trim().split("\n").length);
    await publishModel(store, {
      name: "base",
      config,
      head: { task: "pretrain" },
      weights: initWeights(config, { task: "pretrain" }, 1),
      vocabText,
    });
    for (const [name, set] of [["train", train], ["eval", evalSet]] as const) {
      const { file, text } = datasetFile(task, set);
      await storeDataset(store, { name, file, bytes: new TextEncoder().encode(text) });
    }

    // The job's features and batches, rebuilt as runFinetuneJob and its batch source build them.
    const trainEx = (await readDataset(store, "train", task)).examples;
    const evalEx = (await readDataset(store, "eval", task)).examples;
    const labels = task === "ner"
      ? LabelSet.ofNerExamples([...trainEx, ...evalEx] as NerExample[])
      : LabelSet.ofTextExamples([...trainEx, ...evalEx] as TextExample[]);
    const head: HeadSpec = { task, numLabels: labels.size };
    const base = await loadModel(store, { name: "base" }, { head, seed });
    const tokenizer = base.tokenizerJson
      ? WordPieceTokenizer.fromTokenizerJson(base.tokenizerJson)
      : WordPieceTokenizer.fromVocabText(base.vocabText);
    const features: Feature[] = task === "ner"
      ? encodeNerExamples(trainEx as NerExample[], tokenizer, labels, { maxLength: T }).features
      : encodeTextExamples(trainEx as TextExample[], tokenizer, labels, { task, maxLength: T }).features;
    const ids = { cls: tokenizer.clsId, sep: tokenizer.sepId, pad: tokenizer.padId };
    const batches = epochBatches(features.length, B, {
      seed,
      epoch: 0,
      dropLast: true,
      lengths: Uint32Array.from(features, (f) => f.ids.length),
    }).map((rows) => {
      const batch = makeBatch(Array.from(rows, (i) => features[i]!), head, B, T, ids);
      return { tokens: batch.attentionMask.reduce((a, m) => a + m, 0), positions: batch.B * batch.T };
    });

    // The job, its step events timestamped as they arrive.
    const stepAt: number[] = [], stepTps: number[] = [];
    const t0 = performance.now();
    const outcome = await runFinetuneJob({
      name: "bench",
      base: { name: "base" },
      task,
      trainDataset: "train",
      evalDataset: "eval",
      epochs: 1,
      batchSize: B,
      maxLength: T,
      seed,
      logEvery: 1,
    }, {
      jobId: "bench",
      store,
      emit: (e: TrainerEvent) => {
        if (e.type !== "step") return;
        stepAt.push(performance.now());
        stepTps.push(e.tokensPerSecond);
      },
      ...(o.threads ? { threads: o.threads } : {}),
    });
    const jobWallS = (performance.now() - t0) / 1000;
    const S = outcome.steps;
    if (S !== batches.length || stepAt.length !== S) {
      throw new Error(
        `the job ran ${S} steps (${stepAt.length} events), the rebuilt epoch has ${batches.length}`,
      );
    }
    let tokens = 0, seconds = 0, mismatched = 0;
    for (let k = 1; k < S; k++) {
      const dt = (stepAt[k]! - stepAt[k - 1]!) / 1000;
      tokens += batches[k]!.tokens;
      seconds += dt;
      // The job's own tokens/s for the step says how many tokens it saw: the rebuilt batch must agree.
      if (Math.abs(stepTps[k]! * dt / batches[k]!.tokens - 1) > 0.05) mismatched++;
    }
    if (mismatched > S / 4) {
      console.error(
        `finetune ${task}: ${mismatched} of ${S - 1} rebuilt batches disagree with the job's tokens/s`,
      );
    }
    const real = batches.reduce((a, b) => a + b.tokens, 0);
    const positions = batches.reduce((a, b) => a + b.positions, 0);
    const ours = {
      bench: "finetune_job",
      task,
      impl: "bertforge",
      arch,
      batch: B,
      max_length: T,
      steps: S,
      tokens_per_s: Math.round(tokens / seconds),
      padding_fraction: Math.round((1 - real / positions) * 1000) / 1000,
      ms_per_step: Math.round((seconds / (S - 1)) * 10000) / 10,
      mean_tokens: Math.round((real / (S * B)) * 10) / 10,
      vocab: config.vocab_size,
      data: source,
      job_wall_s: Math.round(jobWallS * 10) / 10,
    };
    console.log(JSON.stringify(ours));

    if (!o.torch) return;
    const rows = features.map((f) => [f.ids, "tokenLabels" in f ? f.tokenLabels : f.label]);
    const ref = await torchReference({
      task,
      arch,
      max_length: T,
      config,
      num_labels: labels.size,
      batch: B,
      steps: S,
      seed,
      threads: o.torchThreads,
      rows,
    });
    if (!ref) return;
    console.log(JSON.stringify(ref));
    console.log(JSON.stringify({
      bench: "finetune_job_ratio",
      task,
      impl: "bertforge",
      vs: "pytorch",
      vs_torch: Math.round((ours.tokens_per_s / (ref.tokens_per_s as number)) * 100) / 100,
    }));
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

export async function main(argv: string[]): Promise<void> {
  const args = parseArgs(argv, {
    string: ["task", "arch"],
    boolean: ["synthetic"],
    default: {
      task: "ner,classify",
      steps: 40,
      batch: 32,
      "max-length": 128,
      arch: "bert-mini",
      seed: 42,
      "torch-threads": 2,
      synthetic: false,
    },
  });
  const tasks = (args.task as string).split(",").map((t) => t.trim()) as FinetuneTask[];
  const B = Number(args.batch), steps = Number(args.steps), seed = Number(args.seed);
  if (!(steps >= 2)) {
    throw new RangeError(`Cannot time steps 2.. as '--steps' must be at least 2: current value is ${steps}`);
  }
  // parseArgs' negatable booleans lose their defaults, so --no-torch is read directly (as train.ts does)
  const withTorch = !argv.includes("--no-torch");

  const real = args.synthetic ? null : await peoplesDaily();
  const need = B * steps + EVAL_SENTENCES;
  const pool = real ?? synthetic(need, seed);
  if (pool.length < need) {
    throw new RangeError(
      `Cannot draw ${need} sentences as '--batch' x '--steps' + ${EVAL_SENTENCES} exceeds train.bio's ` +
        `${pool.length}`,
    );
  }
  const drawn = Rng.seeded(seed).shuffle([...pool]).slice(0, need) as Sentence[];
  const options = {
    B,
    T: Number(args["max-length"]),
    arch: args.arch as string,
    seed,
    ...(args.threads ? { threads: Number(args.threads) } : {}),
    torchThreads: Number(args["torch-threads"]),
    torch: withTorch,
  };
  for (const task of tasks) await benchTask(task, drawn, options, real ? "peoples-daily-ner" : "synthetic");
}

if (import.meta.main) await main(Deno.args);

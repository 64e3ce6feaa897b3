/**
 * `deno task bench trainer_job [--arch bert-mini] [--seq-len 128] [--batch 32] [--steps 12] [--vocab 21128]`
 *
 * A real pretraining job (shards read from a store, batches assembled, events, checkpoint, publish) against
 * the bare engine on the same configuration in the same process (what `deno task bench train` measures:
 * trainStep on ready-made random batches). Both sides report the median step (the first one excluded);
 * the job's tokens/s should be within 10% of the engine's.
 *
 * Prints `{"bench":"trainer_job","impl":"bertforge",...,"tokens_per_s":..,"engine_tokens_per_s":..,"ratio":..}`.
 */
import { parseArgs } from "@std/cli";
import { LocalStore } from "../../services/shared/store/local.ts";
import { publish } from "../../services/shared/store/publish.ts";
import {
  pretrainBatch,
  type PretrainInstance,
  Rng,
  ShardSetWriter,
} from "../../services/shared/shards/mod.ts";
import { presetConfig } from "../../services/shared/model/config.ts";
import type { Batch } from "../../services/shared/engine/engine.ts";
import { createJobEngine } from "../../services/trainer/jobs.ts";
import { runPretrainJob } from "../../services/trainer/pretrain.ts";
import type { TrainerEvent } from "../../services/trainer/loop.ts";

/** Full-length instances (no padding), so job and engine count the same B*T tokens per step. */
function instance(rng: Rng, T: number, V: number): PretrainInstance {
  const original = Uint32Array.from({ length: T }, () => rng.randint(5, V - 1));
  const a = rng.randint(8, T - 8);
  original[0] = 2;
  original[a] = 3;
  original[T - 1] = 3;
  const positions = Array.from({ length: Math.round(T * 0.15) }, (_, k) => 1 + k * 6).filter((p) =>
    p !== a && p < T - 1
  );
  const inputIds = original.slice();
  for (const p of positions) inputIds[p] = 4;
  return {
    inputIds,
    segmentALength: a + 1,
    isRandomNext: rng.random() < 0.5,
    maskedPositions: Uint16Array.from(positions),
    maskedLabels: Uint32Array.from(positions.map((p) => original[p]!)),
  };
}

async function writeShards(store: LocalStore, count: number, T: number, V: number): Promise<void> {
  const vocab = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    ...Array.from({ length: V - 5 }, (_, i) => `t${i}`),
  ];
  await publish(store, "vocabs/bench", { "vocab.txt": vocab.join("\n") + "\n" });
  const rng = Rng.seeded(5);
  const writer = await ShardSetWriter.create(store, "bench", { idBytes: 2, maxSeqLen: T });
  let tokens = 0, masked = 0, randomNext = 0;
  for (let i = 0; i < count; i++) {
    const x = instance(rng, T, V);
    tokens += x.inputIds.length;
    masked += x.maskedPositions.length;
    if (x.isRandomNext) randomNext++;
    await writer.addInstance(x);
  }
  await writer.finish({
    tokens,
    maskedTokens: masked,
    randomNext,
    vocab: { name: "bench", sha256: "0".repeat(64), size: V, padId: 0, clsId: 2, sepId: 3, maskId: 4 },
    corpus: { name: "random", sha256: "0".repeat(64), bytes: 0, documents: count, sentences: 0, files: [] },
    settings: {
      maxSeqLength: T,
      maxPredictionsPerSeq: 20,
      maskedLmProb: 0.15,
      shortSeqProb: 0,
      dupeFactor: 1,
      seed: 5,
      wholeWordMask: false,
      randomNextProb: 0.5,
      blockBytes: 1 << 20,
      evalFraction: 0,
      maxShardBytes: 64 << 20,
    },
    builder: { name: "bench" },
  });
}

export async function main(argv: string[]): Promise<void> {
  const args = parseArgs(argv, {
    string: ["arch", "backend"],
    default: { arch: "bert-mini", "seq-len": 128, batch: 32, steps: 12, vocab: 21128, backend: "native" },
  });
  const arch = args.arch as string, T = Number(args["seq-len"]), B = Number(args.batch);
  const steps = Number(args.steps), V = Number(args.vocab), backend = args.backend as string;
  const threads = args.threads ? Number(args.threads) : undefined;
  const dir = await Deno.makeTempDir({ prefix: "bf-bench-trainer-job-" });
  const store = new LocalStore(dir);
  try {
    // Enough instances that no epoch wraps and the held-out slice stays out of the timed steps.
    await writeShards(store, B * (steps + 4) + 64, T, V);

    // The job. Steps 2.. are timed from its own events (the first pays for allocation and page faults).
    const events: TrainerEvent[] = [];
    const t0 = performance.now();
    const outcome = await runPretrainJob({
      name: "bench",
      shards: "bench",
      arch,
      steps,
      batchSize: B,
      learningRate: 1e-4,
      checkpointEvery: steps,
      evalEvery: steps,
      logEvery: 1,
      seed: 1,
    }, { jobId: "bench", store, emit: (e) => void events.push(e), backend, ...(threads ? { threads } : {}) });
    const jobWallS = (performance.now() - t0) / 1000;
    // Median step time on both sides: a step preempted by another process on a shared machine is noise.
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const stepEvents = events.filter((e): e is Extract<TrainerEvent, { type: "step" }> => e.type === "step")
      .slice(1);
    const jobTokensPerS = (B * T) / median(stepEvents.map((e) => (B * T) / e.tokensPerSecond));

    // The bare engine on ready-made batches, as `deno task bench train` runs it.
    const engine = await createJobEngine({
      config: presetConfig(arch, V),
      head: { task: "pretrain" },
      seed: 1,
      maxBatch: B,
      maxSeqLen: T,
      backend,
      ...(threads ? { threads } : {}),
      optimizer: { lr: 1e-4, totalSteps: steps + 1 },
      log: () => {},
    });
    const rng = Rng.seeded(9);
    const batches: Batch[] = [0, 1].map(() =>
      pretrainBatch(Array.from({ length: B }, () => instance(rng, T, V)), T, 0)
    );
    engine.trainStep(batches[0]!);
    const stepSeconds: number[] = [];
    for (let i = 0; i < steps - 1; i++) {
      const e0 = performance.now();
      engine.trainStep(batches[i % 2]!);
      stepSeconds.push((performance.now() - e0) / 1000);
    }
    const engineTokensPerS = (B * T) / median(stepSeconds);
    engine.dispose();

    console.log(JSON.stringify({
      bench: "trainer_job",
      impl: "bertforge",
      backend,
      arch,
      seq_len: T,
      batch: B,
      steps,
      tokens_per_s: Math.round(jobTokensPerS),
      engine_tokens_per_s: Math.round(engineTokensPerS),
      ratio: Math.round((jobTokensPerS / engineTokensPerS) * 1000) / 1000,
      job_wall_s: Math.round(jobWallS * 10) / 10,
      job_wall_tokens_per_s: Math.round(outcome.tokensPerSecond),
    }));
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main(Deno.args);

/**
 * `deno task bench train [--arch bert-mini] [--seq-len 128] [--batch 32] [--steps 5] [--backend native]
 *   [--profile] [--no-torch] [--no-forward] [--vocab 21128] [--threads N] [--torch-threads N]
 *   [--mask-rate 0.15] [--objective mlm-nsp|mlm]`
 *
 * Full MLM+NSP training steps (forward, backward, AdamW) on random ids with 15% masked positions, then the
 * PyTorch reference (tests/bench/train_torch.py, /usr/bin/python3) on the same config and the ratio, then
 * forward-only inference against torch.no_grad. Prints compact JSON lines; `--profile` adds the time per
 * kernel of the measured steps and the GEMM-only time of the step (the floor a step cannot go below: every
 * kernel but the matrix products is overhead to close). `--mask-rate 0.25 --objective mlm` gives the shape of a
 * packed MLM-only pretraining job, to set beside its tokens/s.
 */
import { parseArgs } from "@std/cli";
import { presetConfig } from "../../services/shared/model/config.ts";
import type { Batch, Engine } from "../../services/shared/engine/engine.ts";
import { NativeEngine } from "../../services/shared/engine/native/native_engine.ts";

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function randomBatch(B: number, T: number, V: number, seed: number, maskRate = 0.15, nsp = true): Batch {
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
  const NT = B * T;
  const inputIds = Int32Array.from({ length: NT }, () => 1 + Math.floor(next() * (V - 1)));
  const mlmLabels = Int32Array.from({ length: NT }, (_, i) => (next() < maskRate ? inputIds[i] : -100));
  return {
    B,
    T,
    inputIds,
    tokenTypeIds: Int32Array.from({ length: NT }, (_, i) => (i % T >= T / 2 ? 1 : 0)),
    attentionMask: new Int32Array(NT).fill(1),
    mlmLabels,
    ...(nsp ? { nspLabels: Int32Array.from({ length: B }, () => (next() < 0.5 ? 1 : 0)) } : {}),
  };
}

/** Peak resident set of this process (VmHWM), in MB. */
function peakRssMb(): number {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const m = status.match(/VmHWM:\s+(\d+) kB/);
    if (m) return Math.round(Number(m[1]) / 1024);
  } catch {
    // not Linux: fall through to the current RSS
  }
  return Math.round(Deno.memoryUsage().rss / 1048576);
}

async function createEngine(
  backend: string,
  options: ConstructorParameters<typeof NativeEngine>[0],
): Promise<Engine> {
  if (backend === "native") return new NativeEngine(options);
  const mod = await import("../../services/shared/engine/tfjs/mod.ts");
  return await mod.createTfjsEngine({ ...options, backend: backend as "cpu" });
}

async function torch(args: string[]): Promise<Record<string, unknown> | null> {
  const script = new URL("./train_torch.py", import.meta.url).pathname;
  try {
    const out = await new Deno.Command("/usr/bin/python3", { args: [script, ...args], stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (!out.success || !text) {
      console.error(`train_torch.py failed: ${new TextDecoder().decode(out.stderr).slice(-500)}`);
      return null;
    }
    return JSON.parse(text.split("\n").at(-1)!);
  } catch (e) {
    console.error(`cannot run /usr/bin/python3 for the PyTorch reference: ${(e as Error).message}`);
    return null;
  }
}

export async function main(argv: string[]): Promise<void> {
  const args = parseArgs(argv, {
    string: ["arch", "backend", "objective"],
    boolean: ["profile"],
    default: {
      arch: "bert-mini",
      "seq-len": 128,
      batch: 32,
      steps: 5,
      warmup: 1,
      vocab: 21128,
      backend: "native",
      profile: false,
      "mask-rate": 0.15,
      objective: "mlm-nsp",
    },
  });
  // parseArgs' negatable booleans lose their defaults, so --no-torch / --no-forward are read directly
  const withTorch = !argv.includes("--no-torch"), withForward = !argv.includes("--no-forward");
  const arch = args.arch, T = Number(args["seq-len"]), B = Number(args.batch), steps = Number(args.steps);
  const warmup = Number(args.warmup), V = Number(args.vocab), backend = args.backend;
  const threads = args.threads ? Number(args.threads) : undefined;
  const config = presetConfig(arch, V);
  const engine = await createEngine(backend, {
    config,
    head: { task: "pretrain" },
    seed: 1,
    maxBatch: B,
    maxSeqLen: T,
    threads,
    optimizer: { lr: 1e-4, totalSteps: steps + warmup },
  });
  const maskRate = Number(args["mask-rate"]), nsp = args.objective !== "mlm";
  const batches = [0, 1].map((i) => randomBatch(B, T, V, 17 + i, maskRate, nsp));
  for (let i = 0; i < warmup; i++) engine.trainStep(batches[i % 2]);
  const native = engine instanceof NativeEngine ? engine : null;
  native?.setProfiling(args.profile);
  native?.profile();
  let loss = 0;
  const stepMs: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    loss = engine.trainStep(batches[i % 2]).loss;
    stepMs.push(performance.now() - t0);
  }
  // the median: on a shared 2-core machine a single preempted step would otherwise dominate (torch reports the same)
  const msPerStep = median(stepMs);
  const ours = {
    bench: "train_step",
    impl: "bertforge",
    backend,
    arch,
    seq_len: T,
    batch: B,
    objective: nsp ? "mlm-nsp" : "mlm",
    mask_rate: maskRate,
    ms_per_step: Math.round(msPerStep * 10) / 10,
    tokens_per_s: Math.round((B * T * 1000) / msPerStep),
    peak_rss_mb: peakRssMb(),
    loss: Math.round(loss * 1e4) / 1e4,
    threads: native?.threads,
    kernels: native?.kernels.impl,
    blas_coretype: native?.blas.coreType,
  };
  console.log(JSON.stringify(ours));
  if (native && args.profile) {
    const prof = native.profile();
    const perStep = Object.fromEntries(
      Object.entries(prof).map(([k, v]) => [k, Math.round((v / steps) * 10) / 10]),
    );
    const gemmMs = Object.entries(perStep).filter(([k]) => k.startsWith("gemm")).reduce(
      (a, [, v]) => a + v,
      0,
    );
    const profiledMs = Object.values(perStep).reduce((a, v) => a + v, 0);
    console.log(
      JSON.stringify({
        bench: "train_step_profile",
        impl: "bertforge",
        backend,
        ms_per_step: perStep,
        // With profiling on, every kernel is timed on its own (and waits for its threads), so the sum is the
        // profiled step; the GEMMs alone are the floor.
        profiled_ms_per_step: Math.round(profiledMs * 10) / 10,
        gemm_ms_per_step: Math.round(gemmMs * 10) / 10,
        gemm_share: Math.round((gemmMs / profiledMs) * 1000) / 1000,
      }),
    );
  }
  const common = ["--arch", arch, "--seq-len", String(T), "--batch", String(B), "--vocab", String(V)];
  // torch's own default thread count unless --torch-threads asks otherwise (here it defaults to 1)
  if (args["torch-threads"]) common.push("--threads", String(args["torch-threads"]));
  if (withTorch) {
    const ref = await torch([...common, "--steps", String(steps), "--warmup", String(warmup)]);
    if (ref) {
      console.log(JSON.stringify(ref));
      console.log(JSON.stringify({
        bench: "train_step_ratio",
        impl: "bertforge",
        backend,
        vs: "pytorch",
        arch,
        seq_len: T,
        batch: B,
        ratio: Math.round((ours.tokens_per_s / (ref.tokens_per_s as number)) * 100) / 100,
      }));
    }
  }
  if (withForward) {
    // inference: batch 32 x 128 (or the training shape when smaller), dropout off
    const fb = randomBatch(B, T, V, 99);
    native?.setProfiling(false);
    engine.forward(fb);
    const reps = Math.max(3, steps);
    const fwdMs: number[] = [];
    for (let i = 0; i < reps; i++) {
      const f0 = performance.now();
      engine.forward(fb);
      fwdMs.push(performance.now() - f0);
    }
    const ms = median(fwdMs);
    const fwd = {
      bench: "forward",
      impl: "bertforge",
      backend,
      arch,
      seq_len: T,
      batch: B,
      ms_per_batch: Math.round(ms * 100) / 100,
      tokens_per_s: Math.round((B * T * 1000) / ms),
    };
    console.log(JSON.stringify(fwd));
    if (withTorch) {
      const ref = await torch([...common, "--steps", String(reps), "--mode", "forward"]);
      if (ref) {
        console.log(JSON.stringify(ref));
        console.log(JSON.stringify({
          bench: "forward_ratio",
          impl: "bertforge",
          backend,
          vs: "pytorch",
          arch,
          ratio: Math.round((fwd.tokens_per_s / (ref.tokens_per_s as number)) * 100) / 100,
        }));
      }
    }
  }
  engine.dispose();
}

if (import.meta.main) await main(Deno.args);

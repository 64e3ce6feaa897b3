/**
 * The training loop as a library, independent of gRPC: micro-batches from a `BatchSource` into
 * `engine.trainStep`, progress events, periodic evaluation with early stopping, checkpoints every N steps,
 * exact resume from the newest complete checkpoint.
 *
 * Exact resume rests on three things being restored together from one checkpoint: the engine (weights,
 * AdamW moments, schedule position, dropout RNG), the data source's cursor, and this loop's own state
 * (curves, best metric, counters). Checkpoints are only taken at optimizer-step boundaries (no half-
 * accumulated gradients to save), and evaluation never touches the training RNG or the training cursor.
 */
import type { Batch, Engine, StepStats, Weights } from "../shared/engine/engine.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { Cancelled, FailedPrecondition } from "../shared/errors.ts";
import { budgetLearningRate } from "../shared/engine/schedule.ts";
import type { Point } from "../shared/report/svg.ts";
import { tracer } from "../shared/telemetry/otel.ts";
import {
  checkpointPrefix,
  loadBest,
  loadLatestCheckpoint,
  pruneCheckpoints,
  saveBest,
  saveCheckpoint,
} from "./checkpoint.ts";

/** Where training micro-batches come from. The cursor is the position after the last batch returned. */
export interface BatchSource {
  /** The next micro-batch, or null when the data is exhausted (fine-tuning after its last epoch). */
  next(): Promise<Batch | null>;
  /** JSON-serialisable position; `restore(cursor())` continues with exactly the batches that would follow. */
  cursor(): unknown;
  restore(cursor: unknown): Promise<void> | void;
  /** Epoch of the batch returned last (0-based). */
  epoch(): number;
  /**
   * Told before every optimizer step how far the job has come (0..1: training time over the budget, or steps
   * over the total), so a source can change what it reads as the job goes on (a short-sequence phase first).
   * Called again after a resume before the first batch, so it must depend on nothing but the fraction and the
   * restored cursor.
   */
  setProgress?(fraction: number): void;
  close?(): Promise<void> | void;
}

export type TrainerEvent =
  | {
    type: "step";
    step: number;
    totalSteps: number;
    epoch: number;
    loss: number;
    learningRate: number;
    tokensPerSecond: number;
    etaSeconds: number;
    /** Time-budgeted jobs: the budget and the training time spent so far (seconds). */
    budgetSeconds?: number;
    trainSeconds?: number;
    mlmAccuracy?: number;
    nspAccuracy?: number;
    accuracy?: number;
  }
  | { type: "eval"; step: number; metrics: Record<string, number>; best: boolean }
  | { type: "checkpoint"; step: number; key: string }
  | { type: "resumed"; step: number; key: string }
  | { type: "early_stop"; step: number; bestStep: number; metric: string; value: number }
  | { type: "diverged"; step: number; lastCheckpointStep: number | null; message: string }
  | { type: "message"; message: string };

export interface EarlyStopping {
  /** Metric name as `evaluate` returns it, e.g. `accuracy`, `f1`, `loss`. */
  metric: string;
  mode: "max" | "min";
  /** Evaluations without improvement before stopping; 0 never stops early (but still keeps the best). */
  patience: number;
}

export interface LoopOptions {
  jobId: string;
  store: ObjectStore;
  engine: Engine;
  source: BatchSource;
  /**
   * Optimizer steps to take (each `gradAccumSteps` micro-batches). With `budget`, the most steps to take
   * (Infinity: as many as the budget allows).
   */
  totalSteps: number;
  /**
   * A time budget: the job trains until `seconds` of training time are spent, and the learning rate follows
   * the time spent (`budgetLearningRate`: warmup over `warmupFraction` of the budget, then linear decay to 0 when
   * it runs out) instead of the step count. Training time is the time of the steps themselves: evaluation,
   * checkpoints and time the job was down do not count, and the time spent is saved in every checkpoint.
   */
  budget?: { seconds: number; peakLearningRate: number; warmupFraction: number };
  /** Seconds on a monotonic clock; a test injects one that advances deterministically. @default performance.now()/1000 */
  clock?: () => number;
  gradAccumSteps?: number;
  /** Steps between checkpoints; one is always written at the end. @default 100 */
  checkpointEvery?: number;
  /** Complete checkpoints kept. @default 2 */
  keepCheckpoints?: number;
  /** Steps between step events (averaged over the window). @default 10 */
  logEvery?: number;
  /** Steps between evaluations; one also runs at the end. 0 disables periodic ones. @default 0 */
  evalEvery?: number;
  /** Metrics on held-out data; must not change the engine's training state. */
  evaluate?: () => Promise<Record<string, number>>;
  earlyStopping?: EarlyStopping;
  emit: (event: TrainerEvent) => void | Promise<void>;
  signal?: AbortSignal;
}

/** The loop's bookkeeping, saved in every checkpoint so curves and early stopping survive a restart. */
export interface LoopState {
  curves: Record<string, Point[]>;
  evalCurves: Record<string, Point[]>;
  window: { loss: number; batches: number; sums: Record<string, number> };
  best: { step: number; value: number; metrics: Record<string, number> } | null;
  evalsSinceBest: number;
  stoppedEarly: boolean;
  tokens: number;
  lastEval: Record<string, number> | null;
  /** Seconds spent in training steps over every run of the job (what a time budget counts). */
  trainSeconds?: number;
}

export interface LoopResult {
  step: number;
  state: LoopState;
  /** The weights to publish: the best evaluation's when early stopping tracked one, else the final ones. */
  weights: Weights;
  weightsFrom: "final" | "best";
  /** Weights at the end of training, whatever the best was. */
  finalWeights: Weights;
  /** Tokens per second over the steps this process ran (not counting resume). */
  tokensPerSecond: number;
  stepsThisRun: number;
}

function freshState(): LoopState {
  return {
    curves: {},
    evalCurves: {},
    window: { loss: 0, batches: 0, sums: {} },
    best: null,
    evalsSinceBest: 0,
    stoppedEarly: false,
    tokens: 0,
    lastEval: null,
    trainSeconds: 0,
  };
}

function push(curves: Record<string, Point[]>, name: string, point: Point) {
  (curves[name] ??= []).push(point);
}

function addStats(window: LoopState["window"], stats: StepStats) {
  window.loss += stats.loss;
  window.batches++;
  for (const key of ["mlmCorrect", "mlmCount", "nspCorrect", "nspCount", "correct", "count"] as const) {
    const v = stats[key];
    if (v !== undefined) window.sums[key] = (window.sums[key] ?? 0) + v;
  }
}

function ratio(sums: Record<string, number>, num: string, den: string): number | undefined {
  const d = sums[den];
  return d ? (sums[num] ?? 0) / d : undefined;
}

function better(value: number, best: number, mode: "max" | "min"): boolean {
  return mode === "max" ? value > best : value < best;
}

/** Most `trainer.step` spans one job makes; a longer job spans every n-th step. */
const MAX_STEP_SPANS = 500;

/** Real (non-padding) tokens of a batch: the throughput that matters to a user. */
function realTokens(batch: Batch): number {
  let n = 0;
  for (let i = 0; i < batch.attentionMask.length; i++) n += batch.attentionMask[i]!;
  return n;
}

/**
 * Runs (or resumes) a training job to `totalSteps`, early stopping or the end of the data. Throws
 * `Cancelled` after writing a resumable checkpoint when the signal aborts, and `FailedPrecondition` when
 * the loss stops being finite (the last good checkpoint stays in place).
 */
export async function runTrainingLoop(options: LoopOptions): Promise<LoopResult> {
  const { jobId, store, engine, source, totalSteps, emit } = options;
  const gradAccum = options.gradAccumSteps ?? 1;
  const checkpointEvery = Math.max(1, options.checkpointEvery ?? 100);
  const keep = options.keepCheckpoints ?? 2;
  const logEvery = Math.max(1, options.logEvery ?? 10);
  const evalEvery = options.evalEvery ?? 0;
  const budget = options.budget;
  const clock = options.clock ?? (() => performance.now() / 1000);
  if (!(totalSteps === Infinity && budget) && (!Number.isInteger(totalSteps) || totalSteps < 1)) {
    throw new FailedPrecondition(`totalSteps must be a positive integer: current value is ${totalSteps}`);
  }
  if (budget && !(budget.seconds > 0 && Number.isFinite(budget.seconds))) {
    throw new FailedPrecondition(
      `budget seconds must be a positive number: current value is ${budget.seconds}`,
    );
  }

  let state = freshState();
  let step = 0;
  let lastCheckpointStep: number | null = null;
  const resumed = await loadLatestCheckpoint(store, jobId);
  if (resumed) {
    engine.setWeights(resumed.weights);
    engine.setTrainState(resumed.trainState);
    await source.restore(resumed.state.cursor);
    state = resumed.state.loop as LoopState;
    step = resumed.step;
    lastCheckpointStep = step;
    await emit({ type: "resumed", step, key: checkpointPrefix(jobId, step) });
  }

  const checkpoint = async () => {
    const trainState = engine.getTrainState();
    const key = await saveCheckpoint(store, jobId, {
      step,
      weights: engine.getWeights(),
      trainState,
      state: {
        step,
        microStep: trainState.microStep,
        rng: trainState.rng,
        cursor: source.cursor(),
        loop: state,
      },
    });
    lastCheckpointStep = step;
    await pruneCheckpoints(store, jobId, keep);
    await emit({ type: "checkpoint", step, key });
  };

  const runEvaluation = async () => {
    if (!options.evaluate) return;
    const metrics = await options.evaluate();
    state.lastEval = metrics;
    for (const [name, value] of Object.entries(metrics)) push(state.evalCurves, name, [step, value]);
    let isBest = false;
    const es = options.earlyStopping;
    if (es) {
      const value = metrics[es.metric];
      if (value === undefined) {
        throw new FailedPrecondition(
          `early stopping metric '${es.metric}' is not among the evaluation metrics: ${
            Object.keys(metrics).join(", ")
          }`,
        );
      }
      const tie = state.best !== null && value === state.best.value;
      // On a tie of the watched metric (accuracy often saturates), the lower evaluation loss wins.
      const tieBroken = tie && metrics.loss !== undefined && state.best!.metrics.loss !== undefined &&
        metrics.loss < state.best!.metrics.loss;
      if (!state.best || better(value, state.best.value, es.mode) || tieBroken) {
        state.best = { step, value, metrics };
        state.evalsSinceBest = 0;
        isBest = true;
        await saveBest(store, jobId, step, engine.getWeights(), metrics);
      } else {
        state.evalsSinceBest++;
        if (es.patience > 0 && state.evalsSinceBest >= es.patience) {
          state.stoppedEarly = true;
          await emit({
            type: "early_stop",
            step,
            bestStep: state.best.step,
            metric: es.metric,
            value: state.best.value,
          });
        }
      }
    }
    await emit({ type: "eval", step, metrics, best: isBest });
  };

  const started = performance.now();
  const startStep = step;
  let tokensThisRun = 0;
  let windowStart = performance.now(), windowTokens = 0;
  let exhausted = false;

  const spans = tracer();
  // A span per optimizer step (a no-op unless OTEL_* configures tracing), so a trace shows the training; a long
  // job spans one step in `spanEvery` (at most ~MAX_STEP_SPANS), which keeps its trace readable and the
  // exporter's queue (2048 spans by default) from dropping spans when steps are fast.
  // A budgeted job's step count is not known in advance: span every 20th step.
  const spanEvery = Number.isFinite(totalSteps) ? Math.max(1, Math.ceil(totalSteps / MAX_STEP_SPANS)) : 20;
  const spent = () => state.trainSeconds ?? 0;
  const budgetLeft = () => budget ? budget.seconds - spent() : Infinity;
  while (step < totalSteps && !state.stoppedEarly && !exhausted && budgetLeft() > 0) {
    if (budget) {
      engine.setLearningRate(
        budgetLearningRate(budget.peakLearningRate, spent() / budget.seconds, budget.warmupFraction),
      );
    }
    source.setProgress?.(budget ? spent() / budget.seconds : step / totalSteps);
    const learningRate = engine.learningRate();
    const stepStart = clock();
    const span = (step + 1) % spanEvery === 0 || step === 0
      ? spans.startSpan("trainer.step", {
        attributes: {
          "bertforge.job_id": jobId,
          "bertforge.step": step + 1,
          "bertforge.step_span_every": spanEvery,
        },
      })
      : undefined;
    const spanStart = performance.now();
    let spanLoss = 0, spanTokens = 0;
    let micro = 0;
    for (; micro < gradAccum; micro++) {
      const batch = await source.next();
      if (!batch) {
        exhausted = true;
        break;
      }
      const stats = engine.trainStep(batch);
      if (!Number.isFinite(stats.loss)) {
        span?.setStatus({ code: 2, message: `loss ${stats.loss}` });
        span?.end();
        const message =
          `loss is ${stats.loss} at step ${step + 1} (epoch ${source.epoch() + 1}): training diverged; ` +
          (lastCheckpointStep === null
            ? "no checkpoint was written yet"
            : `the last good checkpoint is step ${lastCheckpointStep} (${
              checkpointPrefix(jobId, lastCheckpointStep)
            })`) +
          "; try a lower --lr or more --warmup";
        await emit({ type: "diverged", step: step + 1, lastCheckpointStep, message });
        throw new FailedPrecondition(message);
      }
      addStats(state.window, stats);
      const tokens = realTokens(batch);
      spanLoss += stats.loss / gradAccum;
      spanTokens += tokens;
      state.tokens += tokens;
      tokensThisRun += tokens;
      windowTokens += tokens;
    }
    span?.setAttributes({
      "bertforge.loss": spanLoss,
      "bertforge.learning_rate": learningRate,
      "bertforge.tokens": spanTokens,
      "bertforge.tokens_per_s": spanTokens / Math.max(1e-9, (performance.now() - spanStart) / 1000),
    });
    span?.end();
    if (micro < gradAccum) break; // a partial accumulation at the very end of the data is dropped
    step++;
    state.trainSeconds = spent() + Math.max(0, clock() - stepStart);
    const last = step === totalSteps || budgetLeft() <= 0;

    if (step % logEvery === 0 || last) {
      const w = state.window;
      const elapsed = (performance.now() - windowStart) / 1000;
      const tokensPerSecond = elapsed > 0 ? windowTokens / elapsed : 0;
      const secondsPerStep = (performance.now() - started) / 1000 / Math.max(1, step - startStep);
      const loss = w.loss / Math.max(1, w.batches);
      const event: TrainerEvent = {
        type: "step",
        step,
        totalSteps,
        epoch: source.epoch(),
        loss,
        learningRate,
        tokensPerSecond,
        etaSeconds: secondsPerStep * (totalSteps - step),
      };
      if (budget) {
        // The steps the budget will hold at the pace so far; the time left is training time, as the budget counts.
        event.totalSteps = Math.max(step, Math.min(totalSteps, Math.round(step * budget.seconds / spent())));
        event.etaSeconds = Math.max(0, budgetLeft());
        event.budgetSeconds = budget.seconds;
        event.trainSeconds = spent();
      }
      push(state.curves, "loss", [step, loss]);
      push(state.curves, "learning_rate", [step, learningRate]);
      const mlm = ratio(w.sums, "mlmCorrect", "mlmCount");
      const nsp = ratio(w.sums, "nspCorrect", "nspCount");
      const acc = ratio(w.sums, "correct", "count");
      if (mlm !== undefined) push(state.curves, "mlm_accuracy", [step, event.mlmAccuracy = mlm]);
      if (nsp !== undefined) push(state.curves, "nsp_accuracy", [step, event.nspAccuracy = nsp]);
      if (acc !== undefined) push(state.curves, "accuracy", [step, event.accuracy = acc]);
      state.window = { loss: 0, batches: 0, sums: {} };
      windowStart = performance.now();
      windowTokens = 0;
      await emit(event);
    }
    const pauseStart = performance.now();
    if ((evalEvery > 0 && step % evalEvery === 0) || last) await runEvaluation();
    if (step % checkpointEvery === 0 || last || state.stoppedEarly) await checkpoint();
    // Evaluation and checkpoint time is not training time: keep it out of tokens/s.
    windowStart += performance.now() - pauseStart;
    if (options.signal?.aborted) {
      if (lastCheckpointStep !== step) await checkpoint();
      throw new Cancelled(
        `job ${jobId} cancelled at step ${step}; resumable from ${checkpointPrefix(jobId, step)}`,
      );
    }
  }
  if (exhausted && lastCheckpointStep !== step) {
    // The data ran out before totalSteps: evaluate and checkpoint where it ended.
    if (!state.lastEval || state.evalCurves.loss?.at(-1)?.[0] !== step) await runEvaluation();
    await checkpoint();
  }

  const finalWeights = engine.getWeights();
  let weights = finalWeights;
  let weightsFrom: LoopResult["weightsFrom"] = "final";
  if (options.earlyStopping && state.best && state.best.step !== step) {
    const best = await loadBest(store, jobId);
    if (best) {
      weights = best.weights;
      weightsFrom = "best";
    }
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    step,
    state,
    weights,
    weightsFrom,
    finalWeights,
    tokensPerSecond: seconds > 0 ? tokensThisRun / seconds : 0,
    stepsThisRun: step - startStep,
  };
}

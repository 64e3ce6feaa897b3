/**
 * The learning-rate schedules every backend and the training loop share, so the native engine, tfjs and a
 * time-budgeted job agree on what "warmup then linear decay to zero" means.
 *
 * @module
 */
import type { OptimizerConfig } from "./engine.ts";

/**
 * Learning rate of the optimizer step that follows `stepsTaken` completed steps: linear warmup from 0 to `lr`
 * over `warmupSteps`, then linear decay to 0 at `totalSteps` (so with warmup the very first step uses 0, as HF's
 * LambdaLR does).
 */
export function scheduledLearningRate(
  config: Pick<OptimizerConfig, "lr" | "warmupSteps" | "totalSteps">,
  stepsTaken: number,
): number {
  const { lr, warmupSteps, totalSteps } = config;
  if (stepsTaken < warmupSteps) return (lr * stepsTaken) / Math.max(1, warmupSteps);
  return lr * Math.max(0, (totalSteps - stepsTaken) / Math.max(1, totalSteps - warmupSteps));
}

/**
 * The same shape over a share of a time budget instead of a step count (Cramming's budgeted schedule): at
 * `progress` = training seconds spent / seconds budgeted, linear warmup to `peak` over the first
 * `warmupFraction` of the budget, then linear decay reaching 0 exactly when the budget runs out. A step count
 * cannot be known in advance (it depends on the machine and on what else runs on it); the time can.
 */
export function budgetLearningRate(peak: number, progress: number, warmupFraction: number): number {
  const p = Math.min(1, Math.max(0, progress));
  if (p < warmupFraction) return (peak * p) / warmupFraction;
  return peak * Math.max(0, (1 - p) / Math.max(1e-12, 1 - warmupFraction));
}

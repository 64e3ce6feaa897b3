/**
 * Optimizer rules every backend must share bit for bit in meaning (the parity fixtures check them against
 * PyTorch): the learning-rate schedule of HF `get_linear_schedule_with_warmup`, BERT's weight-decay exclusions
 * and torch's `clip_grad_norm_` coefficient. AdamW itself is `torch.optim.AdamW` (decoupled decay applied
 * first, bias-corrected moments, eps added after the square root).
 */
import { InvalidArgument } from "../../errors.ts";
import type { OptimizerConfig } from "../engine.ts";
import { DEFAULT_OPTIMIZER } from "../engine.ts";

/** One schedule for every backend: `services/shared/engine/schedule.ts`. */
export { scheduledLearningRate } from "../schedule.ts";

/** BERT excludes biases and LayerNorm parameters from weight decay. */
export function usesWeightDecay(name: string): boolean {
  return !(name.endsWith(".bias") || name.includes("LayerNorm"));
}

/** torch.nn.utils.clip_grad_norm_: scale = min(1, maxNorm / (norm + 1e-6)); maxNorm 0 disables clipping. */
export function clipScale(globalNorm: number, maxNorm: number): number {
  if (!(maxNorm > 0)) return 1;
  return Math.min(1, maxNorm / (globalNorm + 1e-6));
}

/** Defaults filled in and every field checked, naming the field and its value when wrong. */
export function resolveOptimizer(partial: Partial<OptimizerConfig> = {}): OptimizerConfig {
  const config = { ...DEFAULT_OPTIMIZER, ...partial };
  const check = (field: keyof OptimizerConfig, ok: boolean, rule: string) => {
    if (!ok) {
      throw new InvalidArgument(`optimizer ${field} must be ${rule}: current value is ${config[field]}`);
    }
  };
  check("lr", config.lr >= 0 && Number.isFinite(config.lr), "a finite number >= 0");
  check("weightDecay", config.weightDecay >= 0, ">= 0");
  check("beta1", config.beta1 >= 0 && config.beta1 < 1, "in [0, 1)");
  check("beta2", config.beta2 >= 0 && config.beta2 < 1, "in [0, 1)");
  check("eps", config.eps > 0, "> 0");
  check("warmupSteps", Number.isInteger(config.warmupSteps) && config.warmupSteps >= 0, "an integer >= 0");
  check("totalSteps", Number.isInteger(config.totalSteps) && config.totalSteps >= 1, "an integer >= 1");
  check("maxGradNorm", config.maxGradNorm >= 0, ">= 0 (0 disables clipping)");
  check(
    "gradAccumSteps",
    Number.isInteger(config.gradAccumSteps) && config.gradAccumSteps >= 1,
    "an integer >= 1",
  );
  return config;
}

/**
 * What a pretraining job may be asked for, shared by the trainer (which checks it) and bertctl (which checks it
 * before sending anything).
 *
 * @module
 */

/** `mlm-nsp`: BERT's masked LM + next-sentence prediction; `mlm`: masked LM alone. */
export type PretrainObjective = "mlm-nsp" | "mlm";
export const PRETRAIN_OBJECTIVES: readonly PretrainObjective[] = ["mlm-nsp", "mlm"];

/** The longest time budget a job may ask for: 30 days. */
export const MAX_BUDGET_SECONDS = 30 * 24 * 3600;

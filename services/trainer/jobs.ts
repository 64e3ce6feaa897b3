/**
 * What pretraining and fine-tuning jobs share: the context a job runs in, engine creation, lineage, the
 * pictures and files written beside a published model.
 */
import type { Engine, EngineOptions } from "../shared/engine/engine.ts";
import { createEngine, requestedBackend } from "../shared/engine/select.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import type { Manifest } from "../shared/store/publish.ts";
import { lossCurveSvg, metricCurvesSvg, type Point } from "../shared/report/svg.ts";
import type { LoopState, TrainerEvent } from "./loop.ts";
import { formatDuration } from "../shared/report/duration.ts";

/** What a job body gets from whoever runs it (the JobManager in the service, a test, a bench). */
export interface TrainerJobContext {
  jobId: string;
  store: ObjectStore;
  emit: (event: TrainerEvent) => void | Promise<void>;
  signal?: AbortSignal;
  /** `auto` or a backend name; undefined means BERTFORGE_BACKEND or auto. */
  backend?: string;
  /** Threads for the engine; undefined means BERTFORGE_THREADS or all cores. */
  threads?: number;
  /** Seconds on a monotonic clock, for time budgets; a test injects a deterministic one. */
  clock?: () => number;
}

/** What a finished job published. */
export interface JobOutcome {
  model: { name: string; version: string; prefix: string; sha256?: string; sizeBytes: number };
  metrics: Record<string, number>;
  tokensPerSecond: number;
  steps: number;
}

/** The reference a job returns for the model version it published: weights hash and total size. */
export function publishedModelRef(
  published: { name: string; version: string; prefix: string; manifest: Manifest },
): JobOutcome["model"] {
  const weightsPart = published.manifest.parts.find((p) => p.name === "model.safetensors");
  return {
    name: published.name,
    version: published.version,
    prefix: published.prefix,
    ...(weightsPart ? { sha256: weightsPart.sha256 } : {}),
    sizeBytes: published.manifest.parts.reduce((a, p) => a + p.size, 0),
  };
}

export type JobEngineOptions = EngineOptions & { backend?: string; log?: (message: string) => void };
export type EngineFactory = (options: JobEngineOptions) => Promise<Engine>;

let engineFactory: EngineFactory | null = null;

/** Lets a test or bench pick how engines are made; by default `services/shared/engine/mod.ts` createEngine. */
export function setEngineFactory(factory: EngineFactory | null): void {
  engineFactory = factory;
}

export async function createJobEngine(options: JobEngineOptions): Promise<Engine> {
  if (engineFactory) return await engineFactory(options);
  const threadsEnv = Number(Deno.env.get("BERTFORGE_THREADS") ?? "");
  return await createEngine({
    ...options,
    backend: requestedBackend(options.backend || undefined),
    ...(options.threads === undefined && threadsEnv > 0 ? { threads: threadsEnv } : {}),
  });
}

let codeVersionCache: string | undefined;

/** `git describe`-like code version: the commit (with `-dirty`) when this is a git checkout, else `unknown`. */
export async function codeVersion(): Promise<string> {
  if (codeVersionCache) return codeVersionCache;
  const fromEnv = Deno.env.get("BERTFORGE_CODE_VERSION");
  if (fromEnv) return (codeVersionCache = fromEnv);
  try {
    const root = new URL("../..", import.meta.url).pathname;
    const run = async (...args: string[]) => {
      const out = await new Deno.Command("git", {
        args: ["-C", root, ...args],
        stdout: "piped",
        stderr: "null",
      })
        .output();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : "";
    };
    const commit = await run("rev-parse", "HEAD");
    codeVersionCache = commit ? `git:${commit}` : "unknown";
  } catch {
    codeVersionCache = "unknown";
  }
  return codeVersionCache;
}

export interface LineageInputRef {
  role: string;
  kind: string;
  name: string;
  version?: string;
  sha256?: string;
  prefix?: string;
}

/** lineage.json in the shape of common.proto `Lineage` (snake_case, settings as strings). */
export async function lineageJson(options: {
  artifact: { name: string; version: string; prefix: string };
  inputs: LineageInputRef[];
  settings: Record<string, unknown>;
  jobId: string;
}): Promise<string> {
  const settings: Record<string, string> = {};
  for (const [k, v] of Object.entries(options.settings)) {
    if (v === undefined || v === null) continue;
    settings[k] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return JSON.stringify(
    {
      artifact: {
        kind: "ARTIFACT_KIND_MODEL",
        name: options.artifact.name,
        version: options.artifact.version,
        prefix: `${options.artifact.prefix}/`,
      },
      inputs: options.inputs.map(({ role, ...ref }) => ({
        role,
        ref: {
          kind: `ARTIFACT_KIND_${ref.kind.toUpperCase()}`,
          name: ref.name,
          version: ref.version ?? "",
          prefix: ref.prefix ?? "",
          sha256: ref.sha256 ?? "",
        },
      })),
      settings,
      code_version: await codeVersion(),
      job_id: options.jobId,
      created_at: new Date().toISOString(),
    },
    null,
    2,
  ) + "\n";
}

/** loss.svg (loss, eval loss, learning rate) and accuracy.svg (whatever accuracies were tracked). */
export function curvePictures(state: LoopState): Record<string, string> {
  const files: Record<string, string> = {};
  const evalLoss = state.evalCurves.loss ?? state.evalCurves.eval_loss;
  files["loss.svg"] = lossCurveSvg({
    loss: state.curves.loss ?? [],
    learningRate: state.curves.learning_rate ?? [],
    ...(evalLoss ? { evalLoss } : {}),
  });
  const accuracies: Record<string, Point[]> = {};
  const names: Record<string, string> = {
    mlm_accuracy: "train MLM accuracy",
    nsp_accuracy: "train NSP accuracy",
    accuracy: "train accuracy",
  };
  for (const [key, label] of Object.entries(names)) {
    if (state.curves[key]?.length) accuracies[label] = state.curves[key]!;
  }
  for (const key of ["mlm_accuracy", "nsp_accuracy", "accuracy", "f1", "micro_f1", "macro_f1"]) {
    if (state.evalCurves[key]?.length) accuracies[`eval ${key.replace("_", " ")}`] = state.evalCurves[key]!;
  }
  if (Object.keys(accuracies).length) files["accuracy.svg"] = metricCurvesSvg(accuracies);
  return files;
}

/** A step event for logs: `step 120/1000 loss 6.1234 mlm 0.123 lr 1.0e-4 4,321 tok/s eta 3m10s`. */
export function formatEvent(event: TrainerEvent): string {
  switch (event.type) {
    case "step": {
      const parts = [
        `step ${event.step}/${event.budgetSeconds !== undefined ? "~" : ""}${event.totalSteps}`,
        `loss ${event.loss.toFixed(4)}`,
      ];
      if (event.mlmAccuracy !== undefined) parts.push(`mlm ${event.mlmAccuracy.toFixed(3)}`);
      if (event.nspAccuracy !== undefined) parts.push(`nsp ${event.nspAccuracy.toFixed(3)}`);
      if (event.accuracy !== undefined) parts.push(`acc ${event.accuracy.toFixed(3)}`);
      parts.push(`lr ${event.learningRate.toExponential(2)}`, `${Math.round(event.tokensPerSecond)} tok/s`);
      parts.push(
        event.budgetSeconds !== undefined
          ? `${formatDuration(event.etaSeconds)} left of ${formatDuration(event.budgetSeconds)}`
          : `eta ${Math.round(event.etaSeconds)}s`,
      );
      return parts.join(" ");
    }
    case "eval":
      return `eval @${event.step}${event.best ? " (best)" : ""}: ${
        Object.entries(event.metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(" ")
      }`;
    case "checkpoint":
      return `checkpoint @${event.step}: ${event.key}`;
    case "resumed":
      return `resumed from ${event.key}`;
    case "early_stop":
      return `early stop @${event.step}: best ${event.metric} ${
        event.value.toFixed(4)
      } at step ${event.bestStep}`;
    case "diverged":
    case "message":
      return event.message;
  }
}

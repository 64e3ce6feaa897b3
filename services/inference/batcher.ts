/**
 * Dynamic batching, after TEI's core/src/queue.rs: one loop owns the queue and runs one forward pass at a time;
 * callers only append entries and await them.
 *
 * - Admission is bounded: `maxConcurrentRequests` inputs may be queued or running at once. A request that
 *   does not fit fails at once with RESOURCE_EXHAUSTED (HTTP 429), never waiting and never growing memory
 *   (TEI's `Overloaded` on a full semaphore).
 * - A batch is formed around the oldest entry (so nothing starves): entries for the same model and the same
 *   kind of pass join it in order of length closeness (bucketing, to limit padding), while the padded size
 *   B*T stays within `maxBatchTokens`, B within `maxBatchRequests`, and the backend's own limits.
 * - An entry whose caller went away (signal aborted: cancelled, deadline passed) leaves the queue at once
 *   and is never run; one whose deadline passed while queued fails DEADLINE_EXCEEDED when reached.
 * - Every entry records its queue time and the inference time of the batch it ran in.
 * - With tracing on, each pass is an `inference.batch` span: a child of the oldest traced request it served,
 *   linked to every traced request in it (a batch can serve several traces), with B, T and queue times.
 *
 * Letters: B batch, T padded sequence length, K labels, C hidden, V vocab, P masked positions of an input.
 */
import { setImmediate } from "node:timers";
import { BertforgeError, Cancelled, ResourceExhausted } from "../shared/errors.ts";
import type { Batch, ForwardOutput } from "../shared/engine/engine.ts";
import type { ServingBackend } from "./backends.ts";
import type { InferenceMetrics } from "./metrics.ts";
import { captureTraceContext, type Context, spanContextOf, startSpan } from "../shared/telemetry/otel.ts";

/** Bounds the (B*T, V) MLM logits of one pass: 2^25 floats = 128 MiB. */
const MAX_MLM_FLOATS = 1 << 25;

export interface BatcherOptions {
  /** Largest padded B*T of one forward pass (TEI `--max-batch-tokens`). */
  maxBatchTokens: number;
  /** Largest B of one forward pass (TEI `--max-batch-requests`). */
  maxBatchRequests: number;
  /** Inputs queued or running at once; beyond it RESOURCE_EXHAUSTED (TEI `--max-concurrent-requests`). */
  maxConcurrentRequests: number;
  metrics?: InferenceMetrics;
}

/** What the batcher needs of a served model. */
export interface BatchTarget {
  /** Unique per resident model instance: entries of different instances never share a batch. */
  readonly id: number;
  /** The `model` label of metrics. */
  readonly label: string;
  readonly backend: ServingBackend;
  readonly padId: number;
  readonly vocabSize: number;
  /** True for heads with per-token logits (ner: (B, T, K)); false for (B, K). */
  readonly tokenLevel: boolean;
}

/** One encoded input. */
export interface InferenceInput {
  ids: ArrayLike<number>;
  typeIds: ArrayLike<number>;
  /** Positions whose MLM logits rows are wanted (FillMask, ZeroShot); needs a pretrain head. */
  mlmPositions?: number[];
  /** Hidden states and pooler output (Embed). */
  wantHidden?: boolean;
}

/** One input's share of a forward pass. */
export interface InferenceOutput {
  /** classify/pair/multilabel: (K); ner: (T_i, K) for the input's own T_i tokens; pretrain: empty. */
  logits: Float32Array;
  /** ner with CRF: the Viterbi tags of the input's tokens (T_i). */
  paths?: Int32Array;
  /** (T_i, C) when `wantHidden`. */
  hidden?: Float32Array;
  /** (C) when `wantHidden` and the head has a pooler. */
  pooled?: Float32Array;
  /** (P, V): the MLM logits at `mlmPositions`, in that order. */
  mlm?: Float32Array;
  /** Milliseconds from submission to the start of its forward pass. */
  queueMs: number;
  /** Milliseconds of the forward pass it ran in. */
  inferenceMs: number;
  /** Inputs in that forward pass. */
  batchSize: number;
}

export interface SubmitOptions {
  /** Aborting it (client cancelled, deadline) takes the request's queued inputs out of the queue. */
  signal?: AbortSignal;
  /** Epoch milliseconds after which a still-queued input fails DEADLINE_EXCEEDED. */
  deadline?: number;
}

interface Entry {
  target: BatchTarget;
  input: InferenceInput;
  length: number;
  mlm: boolean;
  enqueuedAt: number;
  deadline: number | undefined;
  /** The submitting request's trace context (tracing on only). */
  trace: Context | undefined;
  resolve: (output: InferenceOutput) => void;
  reject: (error: unknown) => void;
  done: boolean;
}

function abortError(signal: AbortSignal): BertforgeError {
  const reason = signal.reason;
  if (reason instanceof BertforgeError) return reason;
  return new Cancelled(
    `the request was cancelled before it ran${reason instanceof Error ? `: ${reason.message}` : ""}`,
  );
}

export class Batcher {
  readonly options: BatcherOptions;
  #queue: Entry[] = [];
  #admitted = 0;
  #wake: (() => void) | undefined;
  #closed = false;
  #loop: Promise<void>;
  /** Forward passes run so far (tests read it to see batching happen). */
  batches = 0;

  constructor(options: BatcherOptions) {
    for (const key of ["maxBatchTokens", "maxBatchRequests", "maxConcurrentRequests"] as const) {
      const value = options[key];
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(
          `Cannot create the batcher as '${key}' must be a positive integer: current value is ${value}`,
        );
      }
    }
    this.options = options;
    this.#loop = this.#run();
  }

  /** Inputs queued (not yet running). */
  get queueSize(): number {
    return this.#queue.length;
  }

  /** Inputs admitted and not yet answered. */
  get admitted(): number {
    return this.#admitted;
  }

  /**
   * Queues inputs for one model and resolves with their outputs in input order. Throws ResourceExhausted at
   * once when they do not fit in the admission bound; rejects with the abort reason (Cancelled by default)
   * when `signal` aborts first.
   */
  submit(
    target: BatchTarget,
    inputs: InferenceInput[],
    options: SubmitOptions = {},
  ): Promise<InferenceOutput[]> {
    if (this.#closed) return Promise.reject(new Cancelled("the batcher is closed: the service is stopping"));
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const limit = this.options.maxConcurrentRequests;
    if (this.#admitted + inputs.length > limit) {
      this.options.metrics?.overloaded.inc({ model: target.label });
      return Promise.reject(
        new ResourceExhausted(
          `the inference queue is full (${this.#admitted} of ${limit} inputs in flight, this request adds ${inputs.length}): retry with backoff`,
        ),
      );
    }
    for (const input of inputs) {
      if (input.ids.length > target.backend.maxSeqLen) {
        return Promise.reject(
          new ResourceExhausted(
            `input has ${input.ids.length} tokens; the model runs at most ${target.backend.maxSeqLen}`,
          ),
        );
      }
    }
    this.#admitted += inputs.length;
    const now = performance.now();
    const wallNow = Date.now();
    const entries: Entry[] = [];
    const trace = captureTraceContext();
    const promises = inputs.map((input) =>
      new Promise<InferenceOutput>((resolve, reject) => {
        entries.push({
          target,
          input,
          length: input.ids.length,
          mlm: (input.mlmPositions?.length ?? 0) > 0,
          enqueuedAt: now,
          // Deadlines travel as wall-clock times; the queue compares them in the same clock.
          deadline: options.deadline !== undefined ? now + (options.deadline - wallNow) : undefined,
          trace,
          resolve,
          reject,
          done: false,
        });
      })
    );
    const onAbort = () => {
      const error = abortError(signal!);
      for (const entry of entries) {
        if (entry.done) continue;
        const index = this.#queue.indexOf(entry);
        // Running entries finish (their results are dropped by the caller); queued ones leave now.
        if (index >= 0) {
          this.#queue.splice(index, 1);
          this.#finish(entry, undefined, error);
        }
      }
      this.#gauge();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#queue.push(...entries);
    this.#gauge();
    this.#wake?.();
    return Promise.all(promises).finally(() => signal?.removeEventListener("abort", onAbort));
  }

  /** Stops taking inputs and fails the queued ones; resolves when the running pass has finished. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const entry of this.#queue.splice(0)) {
      this.#finish(entry, undefined, new Cancelled("the service is stopping"));
    }
    this.#wake?.();
    await this.#loop;
  }

  #finish(entry: Entry, output: InferenceOutput | undefined, error?: unknown): void {
    if (entry.done) return;
    entry.done = true;
    this.#admitted--;
    this.options.metrics?.inFlight.set(this.#admitted);
    if (output) entry.resolve(output);
    else entry.reject(error);
  }

  #gauge(): void {
    this.options.metrics?.queueDepth.set(this.#queue.length);
    this.options.metrics?.inFlight.set(this.#admitted);
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      if (this.#queue.length === 0) {
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
        continue;
      }
      const batch = this.#take();
      if (batch.length > 0) await this.#forward(batch);
      // Yield past the I/O poll phase (setImmediate, not a timer, which runs before it): requests whose bytes
      // arrived during the pass are parsed and queued first, so they join the next batch.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Removes and returns the next batch (see the module doc). */
  #take(): Entry[] {
    const now = performance.now();
    // Inputs whose deadline passed while queued fail here instead of wasting a pass.
    for (let i = this.#queue.length - 1; i >= 0; i--) {
      const entry = this.#queue[i]!;
      if (entry.deadline !== undefined && entry.deadline <= now) {
        this.#queue.splice(i, 1);
        this.#finish(
          entry,
          undefined,
          new BertforgeError(
            "DEADLINE_EXCEEDED",
            "the request's deadline passed while it waited in the queue",
          ),
        );
      }
    }
    const anchor = this.#queue[0];
    if (!anchor) return [];
    const backend = anchor.target.backend;
    let tokenBudget = Math.min(this.options.maxBatchTokens, backend.maxTokens);
    if (anchor.mlm) tokenBudget = Math.min(tokenBudget, Math.floor(MAX_MLM_FLOATS / anchor.target.vocabSize));
    const candidates: Array<{ entry: Entry; index: number }> = [];
    this.#queue.forEach((entry, index) => {
      if (entry.target === anchor.target && entry.mlm === anchor.mlm) candidates.push({ entry, index });
    });
    // Closest lengths first; ties keep queue order (sort is stable).
    candidates.sort((a, b) =>
      Math.abs(a.entry.length - anchor.length) - Math.abs(b.entry.length - anchor.length)
    );
    const chosen: Entry[] = [];
    let maxLength = 0;
    for (const { entry } of candidates) {
      const T = Math.max(maxLength, entry.length);
      const B = chosen.length + 1;
      // The anchor always runs, even alone over a budget smaller than its length.
      if (chosen.length > 0 && (B * T > tokenBudget || B > this.options.maxBatchRequests)) continue;
      chosen.push(entry);
      maxLength = T;
    }
    const picked = new Set(chosen);
    this.#queue = this.#queue.filter((entry) => !picked.has(entry));
    this.#gauge();
    return chosen;
  }

  async #forward(entries: Entry[]): Promise<void> {
    const target = entries[0]!.target;
    const B = entries.length;
    const T = entries.reduce((max, e) => Math.max(max, e.length), 0);
    const batch: Batch = {
      B,
      T,
      inputIds: new Int32Array(B * T).fill(target.padId),
      tokenTypeIds: new Int32Array(B * T),
      attentionMask: new Int32Array(B * T),
    };
    entries.forEach((entry, b) => {
      const { ids, typeIds } = entry.input;
      for (let t = 0; t < ids.length; t++) {
        batch.inputIds[b * T + t] = ids[t]!;
        batch.tokenTypeIds[b * T + t] = typeIds[t]!;
        batch.attentionMask[b * T + t] = 1;
      }
    });
    const wantHidden = entries.some((e) => e.input.wantHidden);
    const mlmLogits = entries[0]!.mlm;
    const started = performance.now();
    const traced = entries.flatMap((entry) => (entry.trace ? [entry.trace] : []));
    const links = [...new Set(traced)].flatMap((ctx) => spanContextOf(ctx) ?? []);
    // Untraced passes (HTTP without a trace) get no span: a root span per batch would be noise.
    const span = traced.length > 0
      ? startSpan("inference.batch", {
        "bertforge.model": target.label,
        "bertforge.batch.size": B,
        "bertforge.batch.seq_len": T,
        "bertforge.batch.tokens": B * T,
        "bertforge.batch.max_queue_ms": started - Math.min(...entries.map((e) => e.enqueuedAt)),
      }, { parent: traced[0], links })
      : undefined;
    let output: ForwardOutput;
    try {
      output = await target.backend.forward(batch, { wantHidden, mlmLogits });
    } catch (error) {
      span?.recordException(error as Error);
      span?.setStatus({ code: 2, message: (error as Error)?.message ?? String(error) });
      span?.end();
      for (const entry of entries) this.#finish(entry, undefined, error);
      return;
    }
    span?.end();
    const inferenceMs = performance.now() - started;
    this.batches++;
    const metrics = this.options.metrics;
    metrics?.batchSize.observe(B, { model: target.label });
    metrics?.batchTokens.observe(B * T, { model: target.label });
    const tokenLevel = target.tokenLevel;
    const K = output.logits.length / (tokenLevel ? B * T : B);
    const V = target.vocabSize;
    const C = output.hidden ? output.hidden.length / (B * T) : 0;
    entries.forEach((entry, b) => {
      const n = entry.length;
      const result: InferenceOutput = {
        logits: mlmLogits || output.logits.length === 0
          ? new Float32Array(0)
          : tokenLevel
          ? output.logits.slice(b * T * K, (b * T + n) * K)
          : output.logits.slice(b * K, (b + 1) * K),
        queueMs: started - entry.enqueuedAt,
        inferenceMs,
        batchSize: B,
      };
      if (output.paths) result.paths = output.paths.slice(b * T, b * T + n);
      if (entry.input.wantHidden && output.hidden) {
        result.hidden = output.hidden.slice(b * T * C, (b * T + n) * C);
        if (output.pooled) result.pooled = output.pooled.slice(b * C, (b + 1) * C);
      }
      if (entry.mlm) {
        const positions = entry.input.mlmPositions!;
        const rows = new Float32Array(positions.length * V);
        positions.forEach((p, i) =>
          rows.set(output.logits.subarray((b * T + p) * V, (b * T + p + 1) * V), i * V)
        );
        result.mlm = rows;
      }
      metrics?.queueTime.observe(result.queueMs, { model: target.label });
      metrics?.inferenceTime.observe(inferenceMs, { model: target.label });
      this.#finish(entry, result);
    });
  }
}

/**
 * The engine worker: one serving engine (createEngine, mode "serve") on its own thread, so a long forward
 * pass blocks this thread instead of the service's event loop (connections, health checks, cancellations).
 * backends.ts's worker backend is its only client. Messages: `load` once (the weights' buffers are
 * transferred, not copied), then `forward`s, each answered by `result` or `error` with its id. `crash` throws
 * an uncaught error, so tests can drive the parent's dead-worker path without a real fault.
 *
 * Letters: B batch, T sequence length.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { BackendName, Engine, ForwardOutput, HeadSpec, Weights } from "../shared/engine/engine.ts";
import { createEngine } from "../shared/engine/select.ts";
import type { BertConfig } from "../shared/model/config.ts";
import type { ErrorCode } from "../shared/errors.ts";

export interface WorkerLoad {
  type: "load";
  config: BertConfig;
  head: HeadSpec;
  backend: BackendName | "auto";
  maxBatch: number;
  maxSeqLen: number;
  threads?: number;
  weights: Array<{ name: string; shape: number[]; data: Float32Array }>;
}

export interface WorkerForward {
  type: "forward";
  id: number;
  B: number;
  T: number;
  /** inputIds, tokenTypeIds, attentionMask one after another, each (B, T): one buffer to transfer. */
  packed: Int32Array;
  options: { wantHidden?: boolean; mlmLogits?: boolean };
}

export type WorkerRequest = WorkerLoad | WorkerForward | { type: "crash"; message: string };

/** An error as it crosses the thread: the parent rebuilds the matching BertforgeError class from `code`. */
export interface WorkerError {
  code?: ErrorCode;
  name: string;
  message: string;
}

export type WorkerReply =
  | { type: "ready"; backend: BackendName; memoryBytes: number }
  | { type: "log"; message: string }
  | { type: "result"; id: number; output: ForwardOutput }
  | { type: "error"; id: number | null; error: WorkerError };

let engine: Engine | undefined;

function post(reply: WorkerReply, transfer: Transferable[] = []): void {
  self.postMessage(reply, transfer);
}

function describe(error: unknown): WorkerError {
  const e = error as { code?: unknown; name?: unknown; message?: unknown };
  return {
    ...(typeof e?.code === "string" ? { code: e.code as ErrorCode } : {}),
    name: typeof e?.name === "string" ? e.name : "Error",
    message: typeof e?.message === "string" ? e.message : String(error),
  };
}

/**
 * The output's buffers to transfer. An array that is a view into a larger buffer (an engine could hand out
 * a window of its arena) is copied first: transferring that buffer would detach the engine's own memory.
 */
function transferable(output: ForwardOutput): Transferable[] {
  const buffers = new Set<ArrayBuffer>();
  const keys = ["logits", "nspLogits", "paths", "hidden", "pooled"] as const;
  for (const key of keys) {
    let array = output[key];
    if (!array) continue;
    if (
      !(array.buffer instanceof ArrayBuffer) || array.byteOffset !== 0 ||
      array.byteLength !== array.buffer.byteLength
    ) {
      array = array.slice() as typeof array;
      (output as unknown as Record<string, unknown>)[key] = array;
    }
    buffers.add(array!.buffer as ArrayBuffer);
  }
  return [...buffers];
}

async function load(message: WorkerLoad): Promise<void> {
  const created = await createEngine({
    config: message.config,
    head: message.head,
    mode: "serve",
    backend: message.backend,
    maxBatch: message.maxBatch,
    maxSeqLen: message.maxSeqLen,
    ...(message.threads ? { threads: message.threads } : {}),
    log: (line) => post({ type: "log", message: line }),
  });
  try {
    const weights: Weights = new Map(message.weights.map((w) => [w.name, { shape: w.shape, data: w.data }]));
    created.setWeights(weights);
  } catch (error) {
    created.dispose();
    throw error;
  }
  // The engine copied the weights into its arena; dropping the message lets the transferred copy be collected.
  message.weights.length = 0;
  engine = created;
  const measured = created as unknown as { memoryBytes?: () => number };
  post({ type: "ready", backend: created.backend, memoryBytes: measured.memoryBytes?.() ?? 0 });
}

function forward(message: WorkerForward): void {
  if (!engine) throw new Error("the engine worker got a forward before its model loaded");
  const { B, T, packed } = message;
  const N = B * T;
  const output = engine.forward({
    B,
    T,
    inputIds: packed.subarray(0, N),
    tokenTypeIds: packed.subarray(N, 2 * N),
    attentionMask: packed.subarray(2 * N, 3 * N),
  }, message.options);
  post({ type: "result", id: message.id, output }, transferable(output));
}

async function handle(message: WorkerLoad | WorkerForward): Promise<void> {
  const id = message.type === "forward" ? message.id : null;
  try {
    if (message.type === "load") await load(message);
    else forward(message);
  } catch (error) {
    post({ type: "error", id, error: describe(error) });
  }
}

self.onmessage = (event: MessageEvent<WorkerRequest>) => {
  const message = event.data;
  // Uncaught, before any later message runs: it reaches the parent as the worker's `error` event.
  if (message.type === "crash") throw new Error(message.message);
  void handle(message);
};

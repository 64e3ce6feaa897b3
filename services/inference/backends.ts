/**
 * Serving backends: what runs a model's forward pass for the batcher. TEI's `Backend` trait in five lines:
 * a name, the largest batch it takes, `forward`, its memory and `dispose`.
 *
 * - `native`, `tensorflow`, `wasm`, `cpu`: the shared engine (services/shared/engine), forward only. `auto`
 *   takes the fastest that loads (select.ts order). The engine runs in a worker thread of its own
 *   (engine_worker.ts) unless `inProcess` is set or it is tfjs-node: the native engine's OpenBLAS and C
 *   kernels are synchronous FFI calls, so a pass of tens to hundreds of ms on the event loop would stall
 *   every connection, health check and cancellation behind it. The outputs are the same bits either way
 *   (same engine, same threads).
 * - `onnx`: ONNX Runtime (`onnxruntime-node`) on the version's `model.onnx`, when the version carries one.
 *   Under `auto` it is tried first for models that have an export, since ORT's fused CPU kernels beat ours
 *   on inference; a model without `model.onnx` never gets it.
 *
 * Letters: B batch, T sequence length, C hidden, V vocab, K labels.
 */
import { BertforgeError, InvalidArgument, Unavailable } from "../shared/errors.ts";
import { errorFromStatus, grpcCodeOf } from "../shared/rpc/status.ts";
import type { Batch, ForwardOutput, HeadSpec, Weights } from "../shared/engine/engine.ts";
import { createEngine, requestedBackend } from "../shared/engine/select.ts";
import { findTfjsNode } from "../shared/engine/tfjs/locate.ts";
import type { BertConfig } from "../shared/model/config.ts";
import { crfParamsOf, viterbiDecode } from "../shared/model/crf.ts";
import type { WorkerError, WorkerForward, WorkerLoad, WorkerReply, WorkerRequest } from "./engine_worker.ts";

export type ServingBackendName = "native" | "onnx" | "tensorflow" | "wasm" | "cpu";
export const SERVING_BACKENDS: readonly string[] = ["auto", "native", "onnx", "tensorflow", "wasm", "cpu"];

export interface ForwardOptions {
  /** Final hidden states (B, T, C) and pooler output (B, C), for Embed. */
  wantHidden?: boolean;
  /** MLM logits (B, T, V), for FillMask and ZeroShot (pretrain heads only). */
  mlmLogits?: boolean;
}

export interface ServingBackend {
  readonly name: ServingBackendName;
  /** Largest B*T one forward accepts (the batcher's token budget never exceeds it). */
  readonly maxTokens: number;
  /** Longest T one forward accepts. */
  readonly maxSeqLen: number;
  forward(batch: Batch, options: ForwardOptions): ForwardOutput | Promise<ForwardOutput>;
  /** Bytes attributed to the model (weights and preallocated activations). */
  memoryBytes(): number;
  /**
   * Why the backend can no longer serve (its worker died), else undefined. Every forward then rejects; the
   * registry reloads a model whose backend reports a failure.
   */
  failure?(): Error | undefined;
  dispose(): void;
}

export interface BackendOptions {
  config: BertConfig;
  head: HeadSpec;
  /**
   * The model's weights. A worker backend takes them over: their buffers are transferred to its thread, so
   * the arrays here are detached (length 0) once it has loaded.
   */
  weights: Weights;
  /** `auto` or a backend name. */
  backend: string;
  /** Longest input in tokens this model will be asked to run. */
  maxSeqLen: number;
  /** The batcher's token budget (padded B*T). */
  maxBatchTokens: number;
  threads?: number;
  /** The version's model.onnx, when it has one. */
  onnx?: Uint8Array;
  /**
   * Run the engine on the caller's thread instead of a worker: tests, and benchmarks of the engine itself.
   * @default false
   */
  inProcess?: boolean;
  /** Names the model in errors (`name/version`). @default "model" */
  label?: string;
  log?: (message: string) => void;
  /**
   * Called once when a backend that had loaded can no longer serve (its engine worker died), so its owner can
   * load a replacement at once instead of on the next request.
   */
  onFailure?: (error: Error) => void;
}

/** Checks a backend name from a flag or a Load request; throws InvalidArgument naming `field`. */
export function checkBackendName(name: string, field = "backend"): string {
  const value = name === "" ? "auto" : name;
  if (!SERVING_BACKENDS.includes(value)) {
    throw new InvalidArgument(
      `${field} must be one of ${SERVING_BACKENDS.join("|")}: current value is '${name}'`,
    );
  }
  return value;
}

function weightBytes(weights: Weights): number {
  let bytes = 0;
  for (const tensor of weights.values()) bytes += tensor.data.byteLength;
  return bytes;
}

/** Creates the backend a model is served on; `auto` picks the fastest that loads and logs why. */
export async function createServingBackend(options: BackendOptions): Promise<ServingBackend> {
  const requested = checkBackendName(options.backend);
  const log = options.log ?? (() => {});
  if (requested === "onnx" || (requested === "auto" && options.onnx)) {
    try {
      if (!options.onnx) throw new Unavailable("the model version has no model.onnx (export it first)");
      return await createOnnxBackend(options);
    } catch (error) {
      if (requested === "onnx") {
        if (error instanceof Unavailable || error instanceof InvalidArgument) throw error;
        throw new Unavailable(`onnx backend failed to load: ${(error as Error).message}`, { cause: error });
      }
      log(`inference: onnx backend passed over: ${(error as Error).message}`);
    }
  }
  const engineBackend = requested === "auto" ? requestedBackend(undefined) : requestedBackend(requested);
  // One engine arena sized for the token budget: B*T <= maxBatchTokens and T <= maxSeqLen imply the
  // (B, NH, T, T) attention buffers fit as well, so any batch the batcher forms runs.
  const maxBatch = Math.max(1, Math.ceil(options.maxBatchTokens / options.maxSeqLen));
  // Under auto, with tfjs-node absent (the usual case), the worker makes the same choice createEngine makes
  // here (native, else the TensorFlow.js wasm/cpu backends) and logs it the same way; tfjs-node has a thread
  // pool of its own and stays in process.
  const inWorker = engineBackend === "native" || (engineBackend === "auto" && "reason" in findTfjsNode());
  // No fallback to this thread when the worker fails: it has taken the weights, and it made the choice this
  // thread would make.
  if (inWorker && !options.inProcess) {
    return await createWorkerBackend(options, maxBatch, engineBackend === "auto" ? "auto" : "native");
  }
  const engine = await createEngine({
    config: options.config,
    head: options.head,
    mode: "serve",
    backend: engineBackend,
    maxBatch,
    maxSeqLen: options.maxSeqLen,
    ...(options.threads ? { threads: options.threads } : {}),
    log,
  });
  try {
    engine.setWeights(options.weights);
  } catch (error) {
    engine.dispose();
    throw error;
  }
  const bytes = weightBytes(options.weights);
  const measured = engine as unknown as { memoryBytes?: () => number };
  return {
    name: engine.backend,
    maxTokens: maxBatch * options.maxSeqLen,
    maxSeqLen: options.maxSeqLen,
    forward: (batch, forwardOptions) => engine.forward(batch, forwardOptions),
    memoryBytes: () => measured.memoryBytes?.() ?? bytes * 2,
    dispose: () => engine.dispose(),
  };
}

// ---------------------------------------------------------------------------------------------- worker

/** The error a worker reported, as the class callers catch (InvalidArgument stays InvalidArgument). */
function rebuildError(error: WorkerError): Error {
  // The same code-to-class mapping a gRPC client uses for a peer's status.
  if (error.code) return errorFromStatus(grpcCodeOf(error.code), error.message);
  const plain = new Error(error.message);
  plain.name = error.name;
  return plain;
}

/** A worker backend with its test hook: `crash` kills the worker the way a fault in it would. */
export interface WorkerServingBackend extends ServingBackend {
  forward(batch: Batch, options: ForwardOptions): Promise<ForwardOutput>;
  crash(message: string): void;
}

/**
 * The engine (`native`, or `auto` without tfjs-node) in a worker thread (engine_worker.ts): the weights go
 * over once, transferred; each forward sends the batch packed in one transferred buffer and gets the
 * outputs' buffers back the same way. The worker runs one pass at a time, in the order sent; the batcher
 * sends one at a time anyway. The worker costs a thread and a JS heap of its own per resident version.
 */
export async function createWorkerBackend(
  options: BackendOptions,
  maxBatch: number,
  backend: "native" | "auto" = "native",
): Promise<WorkerServingBackend> {
  const label = options.label ?? "model";
  const log = options.log ?? (() => {});
  const bytes = weightBytes(options.weights);
  const worker = new Worker(new URL("./engine_worker.ts", import.meta.url).href, { type: "module" });
  const pending = new Map<number, { resolve: (o: ForwardOutput) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let failure: Error | undefined;
  let disposed = false;
  let memory = bytes * 2;
  let engineName: ServingBackendName = "native";
  let loaded: { resolve: () => void; reject: (e: Error) => void } | undefined;
  const ready = new Promise<void>((resolve, reject) => (loaded = { resolve, reject }));

  const fail = (error: Error) => {
    const afterLoad = failure === undefined && loaded === undefined && !disposed;
    failure ??= error;
    loaded?.reject(failure);
    loaded = undefined;
    for (const waiter of pending.values()) waiter.reject(failure);
    pending.clear();
    // A failed load is its caller's error to handle; a backend that served and then died is news for its owner.
    if (afterLoad) options.onFailure?.(failure);
  };
  worker.onmessage = (event: MessageEvent<WorkerReply>) => {
    const reply = event.data;
    if (reply.type === "log") {
      log(reply.message);
    } else if (reply.type === "ready") {
      if (reply.memoryBytes > 0) memory = reply.memoryBytes;
      engineName = reply.backend;
      loaded?.resolve();
      loaded = undefined;
    } else if (reply.type === "result") {
      const waiter = pending.get(reply.id);
      pending.delete(reply.id);
      waiter?.resolve(reply.output);
    } else if (reply.id === null) {
      loaded?.reject(rebuildError(reply.error));
      loaded = undefined;
    } else {
      const waiter = pending.get(reply.id);
      pending.delete(reply.id);
      waiter?.reject(rebuildError(reply.error));
    }
  };
  // Unhandled, a worker's error is rethrown in this thread and ends the whole service.
  worker.onerror = (event) => {
    event.preventDefault();
    worker.terminate();
    fail(
      new Unavailable(
        `model ${label}: its engine worker died (${event.message}); the model must be reloaded`,
      ),
    );
  };
  worker.onmessageerror = () => {
    worker.terminate();
    fail(
      new BertforgeError("INTERNAL", `model ${label}: a message from its engine worker could not be read`),
    );
  };

  const weights: WorkerLoad["weights"] = [];
  const buffers = new Set<ArrayBuffer>();
  for (const [name, tensor] of options.weights) {
    weights.push({ name, shape: tensor.shape, data: tensor.data });
    // Tensors read from one safetensors file share its buffer: each buffer is listed once.
    if (tensor.data.buffer instanceof ArrayBuffer) buffers.add(tensor.data.buffer);
  }
  const load: WorkerLoad = {
    type: "load",
    config: options.config,
    head: options.head,
    backend,
    maxBatch,
    maxSeqLen: options.maxSeqLen,
    ...(options.threads ? { threads: options.threads } : {}),
    weights,
  };
  worker.postMessage(load, [...buffers]);
  try {
    await ready;
  } catch (error) {
    worker.terminate();
    throw error;
  }

  return {
    name: engineName,
    maxTokens: maxBatch * options.maxSeqLen,
    maxSeqLen: options.maxSeqLen,
    forward(batch: Batch, forwardOptions: ForwardOptions): Promise<ForwardOutput> {
      if (failure) return Promise.reject(failure);
      const { B, T } = batch;
      const N = B * T;
      // One copy into a buffer of our own: the caller keeps its arrays, and the worker gets this one without
      // a second copy by structured clone (12 bytes per token, against a forward pass over them).
      const packed = new Int32Array(3 * N);
      packed.set(batch.inputIds.subarray(0, N), 0);
      packed.set(batch.tokenTypeIds.subarray(0, N), N);
      packed.set(batch.attentionMask.subarray(0, N), 2 * N);
      const id = nextId++;
      const message: WorkerForward = {
        type: "forward",
        id,
        B,
        T,
        packed,
        options: {
          ...(forwardOptions.wantHidden ? { wantHidden: true } : {}),
          ...(forwardOptions.mlmLogits ? { mlmLogits: true } : {}),
        },
      };
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        worker.postMessage(message, [packed.buffer]);
      });
    },
    memoryBytes: () => memory,
    failure: () => failure,
    crash(message: string) {
      worker.postMessage({ type: "crash", message } satisfies WorkerRequest);
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      worker.terminate();
      fail(new Unavailable(`model ${label}: its engine worker was stopped: the model was unloaded`));
    },
  };
}

// ------------------------------------------------------------------------------------------------ onnx

// deno-lint-ignore no-explicit-any
type Ort = any;
let ortModule: Promise<Ort> | undefined;

/** onnxruntime-node, imported once on first use (its native addon is large). */
export function loadOrt(): Promise<Ort> {
  ortModule ??= import("onnxruntime-node").then((m) => m.default ?? m);
  return ortModule;
}

/**
 * ONNX Runtime on the exported graph: inputs `input_ids`, `attention_mask`, `token_type_ids` (int64, (B, T));
 * outputs by HF names: `logits` (head logits, or MLM logits (B, T, V) for pretrain), `last_hidden_state`,
 * `pooler_output`, `nsp_logits` (or `seq_relationship_logits`), as services/shared/model/onnx/export.ts writes
 * them. Outputs the graph lacks are left out of the result.
 */
async function createOnnxBackend(options: BackendOptions): Promise<ServingBackend> {
  const ort = await loadOrt();
  const session = await ort.InferenceSession.create(options.onnx, {
    graphOptimizationLevel: "all",
    executionMode: "sequential",
    ...(options.threads ? { intraOpNumThreads: options.threads } : {}),
  });
  const inputs: string[] = session.inputNames;
  const outputs: string[] = session.outputNames;
  for (const name of ["input_ids", "attention_mask"]) {
    if (!inputs.includes(name)) {
      throw new InvalidArgument(`model.onnx has no input '${name}': inputs are ${inputs.join(", ")}`);
    }
  }
  const task = options.head.task;
  const logitsName = task === "pretrain"
    ? ["prediction_logits", "logits"].find((n) => outputs.includes(n))
    : outputs.includes("logits")
    ? "logits"
    : undefined;
  if (task !== "pretrain" && !logitsName) {
    throw new InvalidArgument(`model.onnx has no output 'logits': outputs are ${outputs.join(", ")}`);
  }
  const int64 = (values: Int32Array, B: number, T: number) => {
    const data = new BigInt64Array(values.length);
    for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]!);
    return new ort.Tensor("int64", data, [B, T]);
  };
  const bytes = options.onnx!.byteLength;
  const crf = options.head.crf ? crfParamsOf(options.weights) : undefined;
  return {
    name: "onnx",
    maxTokens: Math.max(options.maxBatchTokens, options.maxSeqLen),
    maxSeqLen: options.maxSeqLen,
    async forward(batch: Batch, _options: ForwardOptions): Promise<ForwardOutput> {
      const { B, T } = batch;
      const feeds: Record<string, unknown> = {
        input_ids: int64(batch.inputIds, B, T),
        attention_mask: int64(batch.attentionMask, B, T),
      };
      if (inputs.includes("token_type_ids")) feeds.token_type_ids = int64(batch.tokenTypeIds, B, T);
      // Every output is fetched: onnxruntime-node 1.23 labels a subset of fetches with the names of the first
      // outputs instead of the requested ones, which silently swapped last_hidden_state and logits.
      const result = await session.run(feeds);
      const data = (name: string | undefined): Float32Array | undefined =>
        name && result[name] ? new Float32Array(result[name].data as Float32Array) : undefined;
      const out: ForwardOutput = { logits: data(logitsName) ?? new Float32Array(0) };
      const nsp = data("nsp_logits") ?? data("seq_relationship_logits");
      if (nsp) out.nspLogits = nsp;
      const hidden = data("last_hidden_state");
      if (hidden) out.hidden = hidden;
      const pooled = data("pooler_output");
      if (pooled) out.pooled = pooled;
      if (task === "ner" && crf) {
        // The exported graph stops at the emissions; Viterbi runs here with the checkpoint's CRF tensors.
        const K = out.logits.length / (B * T);
        out.paths = viterbiDecode(
          out.logits,
          batch.attentionMask,
          B,
          T,
          K,
          crf.start,
          crf.end,
          crf.transitions,
        );
      }
      return out;
    },
    memoryBytes: () => bytes * 2,
    dispose: () => void session.release?.(),
  };
}

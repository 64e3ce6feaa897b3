/**
 * Serving backends: what runs a model's forward pass for the batcher. TEI's `Backend` trait in five lines:
 * a name, the largest batch it takes, `forward`, its memory and `dispose`.
 *
 * - `native`, `tensorflow`, `wasm`, `cpu`: the shared engine (services/shared/engine), forward only. `auto`
 *   takes the fastest that loads (select.ts order).
 * - `onnx`: ONNX Runtime (`onnxruntime-node`) on the version's `model.onnx`, when the version carries one.
 *   Under `auto` it is tried first for models that have an export, since ORT's fused CPU kernels beat ours
 *   on inference; a model without `model.onnx` never gets it.
 *
 * Letters: B batch, T sequence length, C hidden, V vocab, K labels.
 */
import { InvalidArgument, Unavailable } from "../shared/errors.ts";
import type { Batch, ForwardOutput, HeadSpec, Weights } from "../shared/engine/engine.ts";
import { createEngine, requestedBackend } from "../shared/engine/select.ts";
import type { BertConfig } from "../shared/model/config.ts";
import { viterbiDecode } from "../shared/model/crf.ts";

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
  dispose(): void;
}

export interface BackendOptions {
  config: BertConfig;
  head: HeadSpec;
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
  log?: (message: string) => void;
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
  const tensor = (name: string) => options.weights.get(name)?.data ?? new Float32Array(0);
  const crf = {
    start: tensor("crf.start_transitions"),
    end: tensor("crf.end_transitions"),
    transitions: tensor("crf.transitions"),
  };
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
      if (task === "ner" && options.head.crf) {
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

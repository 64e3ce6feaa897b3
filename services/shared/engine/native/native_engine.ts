/**
 * The native CPU engine: post-LN BERT exactly as Hugging Face BertModel (or, with config
 * `bertforge_layer_norm: "pre"`, the pre-LN variant of config.ts LayerNormPlacement), with explicit forward and
 * backward passes over preallocated arenas, every GEMM on OpenBLAS (blas_ffi.ts), the rest in kernels.c (kernels.ts).
 * Modelled on karpathy/llm.c train_gpt2.c: forward saves what backward needs, backward adds into zeroed
 * parameter gradients, and the chain rule is spelled out where it is applied.
 *
 * Letters: B batch, T sequence length, C hidden, NH heads, HS head size (C/NH), F intermediate, V vocab,
 * L layers, K labels, NT = B*T tokens, M masked positions.
 *
 * Memory: four parameter-sized arenas (params, grads, AdamW m and v, each one Float32Array in the layout of
 * params.ts) and one activation arena sized at creation for maxBatch*maxSeqLen tokens. A step allocates no
 * typed arrays; a batch larger than the arena is refused with both sizes in the message. A serving engine
 * (`mode: "serve"`) has only params and the forward part of the activation arena; m and v are allocated by
 * the first optimizer step or train-state restore, never by a serving engine.
 *
 * Dropout draws come from a counter-based hash (kernels.c draw32): the RNG state is (seed, offset), each dropout
 * site takes the next `n` counters, and backward replays the same counters instead of storing masks.
 *
 * Conventions worth knowing: MLM logits are computed only at positions with a label (fill-mask asks for all of
 * them through forward); the CRF runs over each sequence's attended prefix with -100 positions latent (crf.ts);
 * getTrainState carries no gradients, so save between optimizer steps (microStep 0) for an exact resume.
 */
import { InvalidArgument } from "../../errors.ts";
import { type BertConfig, classifierDropout, FINAL_LAYER_NORM, isPreLayerNorm } from "../../model/config.ts";
import type {
  Batch,
  Engine,
  EngineMode,
  EngineOptions,
  ForwardOutput,
  HeadSpec,
  OptimizerConfig,
  StepStats,
  TrainState,
  Weights,
} from "../engine.ts";
import {
  checkedLearningRate,
  DEFAULT_OPTIMIZER,
  engineMode,
  requireTraining,
  validateHead,
} from "../engine.ts";
import { scheduledLearningRate } from "../schedule.ts";
import { addressOf, type Blas, env, loadBlas } from "./blas_ffi.ts";
import { type BatchedSgemm, draw32, type Kernels, loadKernels } from "./kernels.ts";
import { canonicalName, isIgnorableName, type ParamSpec, paramSpecs } from "./params.ts";
import { crfDecode, crfLoss } from "./crf.ts";

const IGNORE = -100;
/** OpenBLAS/OpenMP thread count last set by any engine of this process. */
let threadsInUse = 0;
/** HF's extended attention mask: (1 - mask) * finfo(float32).min */
const MASK_VALUE = -3.4028234663852886e38;
/** Cap on the MLM logits chunk (rows * V floats): bounds memory for large vocabularies. */
const LOGITS_CHUNK_FLOATS = 1 << 24;

/** A Float32Array view with its address, for the GEMMs that take raw pointers. */
interface Buf {
  a: Float32Array;
  p: number;
}

/** Plans named regions, then allocates one ArrayBuffer and hands out views (llm.c malloc_and_point). */
class Arena {
  private sizes: Array<[string, number]> = [];
  private offsets = new Map<string, number>();
  buffer: ArrayBuffer | null = null;
  total = 0;
  plan(name: string, floats: number): void {
    this.offsets.set(name, this.total);
    this.sizes.push([name, floats]);
    this.total += Math.ceil(floats / 16) * 16; // 64-byte aligned regions
  }
  allocate(): void {
    this.buffer = new ArrayBuffer(this.total * 4);
  }
  f32(name: string): Buf {
    const size = this.sizes.find(([n]) => n === name)![1];
    const a = new Float32Array(this.buffer!, this.offsets.get(name)! * 4, size);
    return { a, p: addressOf(a) };
  }
  i32(name: string): Int32Array {
    const size = this.sizes.find(([n]) => n === name)![1];
    return new Int32Array(this.buffer!, this.offsets.get(name)! * 4, size);
  }
}

interface LayerParams {
  qkvw: Buf; // (3C, C) query, key, value weights stacked
  qkvb: Buf; // (3C)
  attow: Buf; // (C, C)
  attob: Buf; // (C)
  ln1w: Buf; // (C)
  ln1b: Buf; // (C)
  fcw: Buf; // (F, C)
  fcb: Buf; // (F)
  projw: Buf; // (C, F)
  projb: Buf; // (C)
  ln2w: Buf; // (C)
  ln2b: Buf; // (C)
}

/**
 * One layer's saved activations. x is the layer input X[l]. Post-LN: pre1 = x + dropout(Attn(x)),
 * x1 = LN1(pre1), pre2 = x1 + dropout(FFN(x1)), X[l+1] = LN2(pre2). Pre-LN: x1 = LN1(x),
 * pre1 = x + dropout(Attn(x1)), x2 = LN2(pre1), X[l+1] = pre1 + dropout(FFN(x2)).
 */
interface LayerActs {
  qkv: Buf; // (NT, 3C)
  att: Buf; // (B, NH, T, T) attention probabilities before dropout
  attd: Buf; // (B, NH, T, T) after dropout (empty when attention dropout is off): the PV operand, kept for dV
  atty: Buf; // (NT, C) attention output, heads side by side
  pre1: Buf; // (NT, C) x + dropout(atty Wo + bo)
  mean1: Buf; // (NT) LN1 statistics (of pre1 post-LN, of x pre-LN)
  rstd1: Buf; // (NT)
  x1: Buf; // (NT, C) LN1 output: the FFN input post-LN, the attention input pre-LN
  h: Buf; // (NT, F) FFN pre-activation
  g: Buf; // (NT, F) gelu(h)
  pre2: Buf; // (NT, C) post-LN only: x1 + dropout(g Wproj + bproj), the LN2 input
  x2: Buf; // (NT, C) pre-LN only: LN2(pre1), the FFN input
  mean2: Buf; // (NT) LN2 statistics (of pre2 post-LN, of pre1 pre-LN)
  rstd2: Buf; // (NT)
}

type Group = "params" | "grads";

interface Tensors {
  wte: Buf; // (V, C)
  wpe: Buf; // (maxPos, C)
  wtt: Buf; // (typeVocab, C)
  embLnW: Buf;
  embLnB: Buf;
  layers: LayerParams[];
  lnfW: Buf; // (C) pre-LN only: the final LayerNorm on X[L]
  lnfB: Buf;
  poolW: Buf; // (C, C)
  poolB: Buf;
  mlmW: Buf; // (C, C) transform dense
  mlmB: Buf;
  mlmLnW: Buf;
  mlmLnB: Buf;
  decB: Buf; // (V) cls.predictions.bias
  nspW: Buf; // (2, C)
  nspB: Buf;
  clsW: Buf; // (K, C)
  clsB: Buf;
  crfT: Buf; // (K, K)
  crfS: Buf; // (K)
  crfE: Buf; // (K)
}

/** Every optimizer field checked up front, naming the field and its value. */
function checkOptimizer(o: OptimizerConfig): OptimizerConfig {
  const rule = (field: keyof OptimizerConfig, ok: boolean, what: string) => {
    if (!ok) throw new InvalidArgument(`optimizer ${field} must be ${what}: current value is ${o[field]}`);
  };
  rule("lr", Number.isFinite(o.lr) && o.lr >= 0, "a finite number >= 0");
  rule("weightDecay", Number.isFinite(o.weightDecay) && o.weightDecay >= 0, "a finite number >= 0");
  rule("beta1", o.beta1 >= 0 && o.beta1 < 1, "in [0, 1)");
  rule("beta2", o.beta2 >= 0 && o.beta2 < 1, "in [0, 1)");
  rule("eps", o.eps > 0, "> 0");
  rule("warmupSteps", Number.isInteger(o.warmupSteps) && o.warmupSteps >= 0, "an integer >= 0");
  rule("totalSteps", Number.isInteger(o.totalSteps) && o.totalSteps >= 1, "an integer >= 1");
  rule("maxGradNorm", o.maxGradNorm >= 0, ">= 0 (0 disables clipping)");
  rule("gradAccumSteps", Number.isInteger(o.gradAccumSteps) && o.gradAccumSteps >= 1, "an integer >= 1");
  return o;
}

export interface NativeEngineOptions extends EngineOptions {
  /** "ts" forces the TypeScript kernels (tests compare them with the C ones). */
  kernels?: "c" | "ts";
  /** false: one OpenBLAS call per attention head from TypeScript instead of the C batched loop. @default true */
  batchedAttention?: boolean;
}

export class NativeEngine implements Engine {
  readonly backend = "native" as const;
  readonly config: BertConfig;
  readonly head: HeadSpec;
  readonly kernels: Kernels;
  readonly blas: Blas;
  readonly threads: number;
  readonly maxTokens: number;
  readonly maxSeqLen: number;
  readonly mode: EngineMode;
  private readonly opt: OptimizerConfig;
  /** The head reads the mean of the last layer, not the pooler (HeadSpec.pooling). */
  private readonly meanPooling: boolean;
  /** Pre-LN layers and a final LayerNorm (config bertforge_layer_norm "pre"). */
  private readonly preLN: boolean;
  private readonly specs: ParamSpec[];
  private readonly specByName: Map<string, ParamSpec>;
  private readonly numParams: number;
  private readonly numDecay: number;
  private params: Float32Array;
  /** empty on a serving engine */
  private grads: Float32Array;
  // AdamW moments, allocated by the first optimizer step or train-state restore, so a training engine that
  // never steps (a gradient check, an evaluation) does not hold two more parameter-sized arrays.
  private moments?: { m: Float32Array; v: Float32Array };
  private get m(): Float32Array {
    return (this.moments ??= { m: new Float32Array(this.numParams), v: new Float32Array(this.numParams) }).m;
  }
  private get v(): Float32Array {
    return (this.moments ??= { m: new Float32Array(this.numParams), v: new Float32Array(this.numParams) }).v;
  }
  private P: Tensors;
  private G: Tensors;
  private acts: Arena;
  private X: Buf[]; // L+1 of (NT, C): X[0] embeddings output, X[l+1] output of layer l
  private LA: LayerActs[];
  private A: Record<string, Buf>;
  private I: Record<string, Int32Array>;
  private step = 0;
  private microStep = 0;
  private lrOverride: number | null = null;
  private rngSeed: number;
  private rngOffset = 0;
  /** dropout counter offsets of the current step's sites, replayed by backward */
  private siteOffsets: Float64Array;
  private site = 0;
  /** dropout probabilities the last encoder forward used (0 in eval), so backward replays exactly those */
  private fwdDropH = 0;
  private fwdDropA = 0;
  private K: number;
  private logitsRows: number;
  /** on by default: about a hundred performance.now() calls per step cost microseconds */
  private profiling = true;
  private profileTimes = new Map<string, number>();
  private lastMark = 0;
  private disposed = false;
  /** the C loop over attention heads, when the kernel library could attach to the BLAS library */
  private batched: BatchedSgemm | null = null;

  constructor(options: NativeEngineOptions) {
    this.config = options.config;
    this.head = { ...options.head };
    this.meanPooling = this.head.pooling === "mean";
    const c = this.config;
    this.preLN = isPreLayerNorm(c);
    const task = validateHead(this.head).task;
    this.K = task === "pretrain" || task === "qa" ? 2 : this.head.numLabels!;
    this.mode = engineMode(options.mode);
    this.opt = checkOptimizer({ ...DEFAULT_OPTIMIZER, ...(options.optimizer ?? {}) });
    const envThreads = Number(env("BERTFORGE_THREADS") ?? "");
    this.threads = options.threads ?? (envThreads > 0 ? envThreads : navigator.hardwareConcurrency ?? 1);
    this.blas = loadBlas();
    this.kernels = loadKernels(options.kernels);
    this.useThreads();
    if (options.batchedAttention !== false && this.kernels.attachBlas?.(this.blas.library)) {
      this.batched = this.kernels.batchedSgemm ?? null;
    }
    this.rngSeed = (options.seed ?? 0) >>> 0;
    if (env("BERTFORGE_PROFILE") === "0") this.profiling = false;

    const maxBatch = options.maxBatch ?? 32;
    this.maxSeqLen = Math.min(options.maxSeqLen ?? 128, c.max_position_embeddings);
    if (!(Number.isInteger(maxBatch) && maxBatch >= 1)) {
      throw new InvalidArgument(`maxBatch must be a positive integer: current value is ${maxBatch}`);
    }
    if (!(Number.isInteger(this.maxSeqLen) && this.maxSeqLen >= 1)) {
      throw new InvalidArgument(
        `maxSeqLen must be a positive integer: current value is ${options.maxSeqLen}`,
      );
    }
    this.maxTokens = maxBatch * this.maxSeqLen;

    this.specs = paramSpecs(c, this.head);
    this.specByName = new Map(this.specs.map((s) => [s.name, s]));
    this.numParams = this.specs.reduce((a, s) => a + s.size, 0);
    this.numDecay = this.specs.filter((s) => s.decay).reduce((a, s) => a + s.size, 0);
    const training = this.mode === "train";
    this.params = new Float32Array(this.numParams);
    this.grads = new Float32Array(training ? this.numParams : 0);
    this.P = this.pointTensors("params");
    this.G = this.pointTensors("grads");
    this.initWeights();

    // ---- activations, sized for maxTokens; attention for maxBatch sequences of maxSeqLen
    const C = c.hidden_size, F = c.intermediate_size, NH = c.num_attention_heads, L = c.num_hidden_layers;
    const NT = this.maxTokens, NA = maxBatch * NH * this.maxSeqLen * this.maxSeqLen;
    this.logitsRows = Math.max(1, Math.min(NT, Math.floor(LOGITS_CHUNK_FLOATS / c.vocab_size)));
    const ar = new Arena();
    const kMax = Math.max(this.K, 2);
    // regions only backward (or dropout, which serving never applies) reads: empty on a serving engine
    const back = (floats: number) => (training ? floats : 0);
    ar.plan("addmask", NT); // (B, T)
    ar.plan("emb", NT * C); // (NT, C) word + position + type, before LayerNorm
    ar.plan("embMean", NT);
    ar.plan("embRstd", NT);
    for (let l = 0; l <= L; l++) ar.plan(`X${l}`, NT * C);
    for (let l = 0; l < L; l++) {
      ar.plan(`qkv${l}`, NT * 3 * C);
      ar.plan(`att${l}`, NA);
      ar.plan(`attd${l}`, c.attention_probs_dropout_prob > 0 ? back(NA) : 0);
      for (const n of ["atty", "pre1", "x1"]) ar.plan(`${n}${l}`, NT * C);
      ar.plan(`pre2${l}`, this.preLN ? 0 : NT * C);
      ar.plan(`x2${l}`, this.preLN ? NT * C : 0);
      for (const n of ["mean1", "rstd1", "mean2", "rstd2"]) ar.plan(`${n}${l}`, NT);
      ar.plan(`h${l}`, NT * F);
      ar.plan(`g${l}`, NT * F);
    }
    ar.plan("xf", this.preLN ? NT * C : 0); // (NT, C) pre-LN: LN_f(X[L]), the heads' input
    ar.plan("xfMean", this.preLN ? NT : 0);
    ar.plan("xfRstd", this.preLN ? NT : 0);
    ar.plan("zeroC", C); // (C) zeros, never written: the bias of addInto
    // scratch shared by all layers
    ar.plan("tmp", NT * C);
    ar.plan("dX", back(NT * C));
    ar.plan("dPre", back(NT * C));
    ar.plan("dTmp", back(NT * C));
    ar.plan("dQKV", back(NT * 3 * C));
    ar.plan("dH", back(NT * F));
    ar.plan("dAtt", back(NA));
    // heads
    ar.plan("pooled", NT * C); // (B, C) tanh output (sized NT: B <= NT)
    ar.plan("pooledDrop", NT * C); // (B, C)
    ar.plan("dPooled", back(NT * C));
    ar.plan("headX", NT * C); // (NT, C) ner: dropout(X_L)
    ar.plan("smallLogits", NT * kMax); // (B, K) or (NT, K)
    ar.plan("dEmit", this.head.crf ? back(NT * kMax) : 0); // (NT, K) CRF gradient of the emissions
    ar.plan("losses", NT);
    ar.plan("preds", NT);
    ar.plan("labelsI", NT); // int32 labels of the CE in flight
    ar.plan("qaSplit", task === "qa" ? 2 * NT : 0); // (2, B, T) qa: start logits, then end logits
    if (task === "pretrain") {
      ar.plan("mlmIdx", NT); // int32 (M) flat positions with a label
      ar.plan("mlmLabels", NT); // int32 (M)
      ar.plan("hm", NT * C); // (M, C) gathered hidden states
      ar.plan("mt", NT * C); // (M, C) transform dense output (pre-gelu)
      ar.plan("mg", NT * C); // (M, C) gelu
      ar.plan("mz", NT * C); // (M, C) LayerNorm output, the decoder input
      ar.plan("mMean", NT);
      ar.plan("mRstd", NT);
      ar.plan("logits", this.logitsRows * c.vocab_size); // (rows, V) one chunk of MLM logits
    }
    ar.allocate();
    this.acts = ar;
    this.X = Array.from({ length: L + 1 }, (_, l) => ar.f32(`X${l}`));
    this.LA = Array.from({ length: L }, (_, l) => ({
      qkv: ar.f32(`qkv${l}`),
      att: ar.f32(`att${l}`),
      attd: ar.f32(`attd${l}`),
      atty: ar.f32(`atty${l}`),
      pre1: ar.f32(`pre1${l}`),
      mean1: ar.f32(`mean1${l}`),
      rstd1: ar.f32(`rstd1${l}`),
      x1: ar.f32(`x1${l}`),
      h: ar.f32(`h${l}`),
      g: ar.f32(`g${l}`),
      pre2: ar.f32(`pre2${l}`),
      x2: ar.f32(`x2${l}`),
      mean2: ar.f32(`mean2${l}`),
      rstd2: ar.f32(`rstd2${l}`),
    }));
    const names = [
      "addmask",
      "emb",
      "embMean",
      "embRstd",
      "xf",
      "xfMean",
      "xfRstd",
      "zeroC",
      "tmp",
      "dX",
      "dPre",
      "dTmp",
      "dQKV",
      "dH",
      "dAtt",
      "pooled",
      "pooledDrop",
      "dPooled",
      "headX",
      "smallLogits",
      "dEmit",
      "qaSplit",
      "losses",
      "preds",
    ];
    if (task === "pretrain") names.push("hm", "mt", "mg", "mz", "mMean", "mRstd", "logits");
    this.A = Object.fromEntries(names.map((n) => [n, ar.f32(n)]));
    this.I = { labelsI: ar.i32("labelsI") };
    if (task === "pretrain") {
      this.I.mlmIdx = ar.i32("mlmIdx");
      this.I.mlmLabels = ar.i32("mlmLabels");
    }
    this.siteOffsets = new Float64Array(3 * L + 4);
  }

  // ------------------------------------------------------------------------------------------ parameters

  private pointTensors(group: Group): Tensors {
    const arena = group === "params" ? this.params : this.grads;
    const view = (name: string, size?: number): Buf => {
      const s = this.specByName.get(name);
      if (!s || arena.length === 0) return { a: new Float32Array(0), p: 0 };
      const a = arena.subarray(s.offset, s.offset + (size ?? s.size));
      return { a, p: addressOf(a) };
    };
    const C = this.config.hidden_size;
    const layers: LayerParams[] = [];
    for (let l = 0; l < this.config.num_hidden_layers; l++) {
      const p = `bert.encoder.layer.${l}`;
      layers.push({
        qkvw: view(`${p}.attention.self.query.weight`, 3 * C * C),
        qkvb: view(`${p}.attention.self.query.bias`, 3 * C),
        attow: view(`${p}.attention.output.dense.weight`),
        attob: view(`${p}.attention.output.dense.bias`),
        ln1w: view(`${p}.attention.output.LayerNorm.weight`),
        ln1b: view(`${p}.attention.output.LayerNorm.bias`),
        fcw: view(`${p}.intermediate.dense.weight`),
        fcb: view(`${p}.intermediate.dense.bias`),
        projw: view(`${p}.output.dense.weight`),
        projb: view(`${p}.output.dense.bias`),
        ln2w: view(`${p}.output.LayerNorm.weight`),
        ln2b: view(`${p}.output.LayerNorm.bias`),
      });
    }
    return {
      wte: view("bert.embeddings.word_embeddings.weight"),
      wpe: view("bert.embeddings.position_embeddings.weight"),
      wtt: view("bert.embeddings.token_type_embeddings.weight"),
      embLnW: view("bert.embeddings.LayerNorm.weight"),
      embLnB: view("bert.embeddings.LayerNorm.bias"),
      layers,
      lnfW: view(`${FINAL_LAYER_NORM}.weight`),
      lnfB: view(`${FINAL_LAYER_NORM}.bias`),
      poolW: view("bert.pooler.dense.weight"),
      poolB: view("bert.pooler.dense.bias"),
      mlmW: view("cls.predictions.transform.dense.weight"),
      mlmB: view("cls.predictions.transform.dense.bias"),
      mlmLnW: view("cls.predictions.transform.LayerNorm.weight"),
      mlmLnB: view("cls.predictions.transform.LayerNorm.bias"),
      decB: view("cls.predictions.bias"),
      nspW: view("cls.seq_relationship.weight"),
      nspB: view("cls.seq_relationship.bias"),
      // qa: HF's qa_outputs (2, C) is the classifier of the span head
      clsW: view(this.head.task === "qa" ? "qa_outputs.weight" : "classifier.weight"),
      clsB: view(this.head.task === "qa" ? "qa_outputs.bias" : "classifier.bias"),
      crfT: view("crf.transitions"),
      crfS: view("crf.start_transitions"),
      crfE: view("crf.end_transitions"),
    };
  }

  /** HF _init_weights: Linear/Embedding ~ N(0, initializer_range), padding row 0, LayerNorm 1/0, biases 0. */
  private initWeights(): void {
    // a stream of its own, so init never shares counters with dropout
    const seed = (this.rngSeed ^ 0x5bd1e995) >>> 0;
    let counter = 0;
    const std = this.config.initializer_range;
    for (const s of this.specs) {
      const w = this.params.subarray(s.offset, s.offset + s.size);
      if (s.init === "ones") w.fill(1);
      else if (s.init === "zeros") w.fill(0);
      else if (s.init === "crf") {
        // pytorch-crf: uniform(-0.1, 0.1)
        for (let i = 0; i < s.size; i++) w[i] = ((draw32(seed, counter++) + 0.5) / 4294967296) * 0.2 - 0.1;
      } else {
        for (let i = 0; i < s.size; i += 2) {
          // Box-Muller on two 32-bit draws
          const u1 = (draw32(seed, counter++) + 0.5) / 4294967296;
          const u2 = (draw32(seed, counter++) + 0.5) / 4294967296;
          const r = Math.sqrt(-2 * Math.log(u1)) * std;
          w[i] = r * Math.cos(2 * Math.PI * u2);
          if (i + 1 < s.size) w[i + 1] = r * Math.sin(2 * Math.PI * u2);
        }
      }
    }
    const pad = this.config.pad_token_id;
    if (pad >= 0 && pad < this.config.vocab_size) {
      const C = this.config.hidden_size;
      this.P.wte.a.fill(0, pad * C, pad * C + C);
    }
  }

  getWeights(): Weights {
    const out: Weights = new Map();
    for (const s of this.specs) {
      out.set(s.name, { shape: [...s.shape], data: this.params.slice(s.offset, s.offset + s.size) });
    }
    return out;
  }

  setWeights(weights: Weights, options?: { allowMissingHead?: boolean }): void {
    const seen = new Set<string>();
    const unexpected: string[] = [];
    const staged: Array<[ParamSpec, Float32Array]> = [];
    for (const [rawName, tensor] of weights) {
      const name = canonicalName(rawName);
      const spec = this.specByName.get(name);
      if (!spec) {
        if (!isIgnorableName(name)) unexpected.push(rawName);
        continue;
      }
      const shape = tensor.shape.join(",");
      if (shape !== spec.shape.join(",") || tensor.data.length !== spec.size) {
        throw new InvalidArgument(
          `weights tensor '${rawName}' has shape [${tensor.shape}] (${tensor.data.length} values): expected [${spec.shape}]`,
        );
      }
      seen.add(name);
      staged.push([spec, tensor.data]);
    }
    if (unexpected.length) {
      throw new InvalidArgument(`weights hold unexpected tensors: ${unexpected.join(", ")}`);
    }
    const missing = this.specs.filter((s) => !seen.has(s.name) && !(options?.allowMissingHead && s.head));
    if (missing.length) {
      throw new InvalidArgument(`weights are missing tensors: ${missing.map((s) => s.name).join(", ")}`);
    }
    for (const [spec, data] of staged) this.params.set(data, spec.offset);
  }

  getTrainState(): TrainState {
    requireTraining(this.mode, "getTrainState");
    const moments = new Map<string, { m: Float32Array; v: Float32Array }>();
    for (const s of this.specs) {
      moments.set(s.name, {
        m: this.m.slice(s.offset, s.offset + s.size),
        v: this.v.slice(s.offset, s.offset + s.size),
      });
    }
    return {
      step: this.step,
      microStep: this.microStep,
      moments,
      rng: { kind: "counter-hash-v1", seed: this.rngSeed, offset: this.rngOffset },
    };
  }

  setTrainState(state: TrainState): void {
    requireTraining(this.mode, "setTrainState");
    const rng = state.rng as { kind?: string; seed?: number; offset?: number } | undefined;
    if (
      !rng || rng.kind !== "counter-hash-v1" || typeof rng.seed !== "number" || typeof rng.offset !== "number"
    ) {
      throw new InvalidArgument(`train state rng is not a native engine RNG state: ${JSON.stringify(rng)}`);
    }
    if (!(Number.isInteger(state.step) && state.step >= 0)) {
      throw new InvalidArgument(`train state step must be an integer >= 0: current value is ${state.step}`);
    }
    for (const s of this.specs) {
      const mv = state.moments.get(s.name);
      if (!mv) throw new InvalidArgument(`train state moments are missing tensor '${s.name}'`);
      if (mv.m.length !== s.size || mv.v.length !== s.size) {
        throw new InvalidArgument(
          `train state moments of '${s.name}' hold ${mv.m.length} values: expected ${s.size}`,
        );
      }
    }
    for (const s of this.specs) {
      const mv = state.moments.get(s.name)!;
      this.m.set(mv.m, s.offset);
      this.v.set(mv.v, s.offset);
    }
    this.step = state.step;
    this.microStep = state.microStep ?? 0;
    this.rngSeed = rng.seed >>> 0;
    this.rngOffset = rng.offset;
  }

  learningRate(): number {
    return this.lrOverride ?? scheduledLearningRate(this.opt, this.step);
  }

  setLearningRate(lr: number | null): void {
    this.lrOverride = checkedLearningRate(lr);
  }

  // ------------------------------------------------------------------------------------------ profiling

  /** Starts (or stops) per-kernel timing; `profile()` returns and resets the totals in ms. */
  setProfiling(on: boolean): void {
    this.profiling = on;
    this.lastMark = performance.now();
  }

  profile(): Record<string, number> {
    const out = Object.fromEntries([...this.profileTimes].sort((a, b) => b[1] - a[1]));
    this.profileTimes.clear();
    return out;
  }

  /** Charges the time since the previous mark to `name`. */
  private mark(name: string): void {
    if (!this.profiling) return;
    const now = performance.now();
    this.profileTimes.set(name, (this.profileTimes.get(name) ?? 0) + now - this.lastMark);
    this.lastMark = now;
  }

  // ------------------------------------------------------------------------------------------ batches

  private checkBatch(batch: Batch, training: boolean): void {
    if (this.disposed) throw new InvalidArgument("native engine was disposed");
    const c = this.config;
    const { B, T } = batch;
    if (!(Number.isInteger(B) && B >= 1)) {
      throw new InvalidArgument(`batch B must be a positive integer: current value is ${B}`);
    }
    if (!(Number.isInteger(T) && T >= 1)) {
      throw new InvalidArgument(`batch T must be a positive integer: current value is ${T}`);
    }
    if (T > this.maxSeqLen) {
      throw new InvalidArgument(
        `batch T = ${T} exceeds the engine's maxSeqLen = ${this.maxSeqLen} (create the engine with a larger maxSeqLen)`,
      );
    }
    if (B * T > this.maxTokens) {
      throw new InvalidArgument(
        `batch B*T = ${B}*${T} = ${
          B * T
        } tokens exceeds the engine's preallocated maxBatch*maxSeqLen = ${this.maxTokens}`,
      );
    }
    const NT = B * T;
    const len = (field: string, arr: { length: number } | undefined, n: number, dims: string) => {
      if (!arr) throw new InvalidArgument(`batch ${field} is required for task '${this.head.task}'`);
      if (arr.length !== n) {
        throw new InvalidArgument(
          `batch ${field} must hold ${dims} = ${n} values: current length is ${arr.length}`,
        );
      }
    };
    const range = (field: string, arr: Int32Array, hi: number, allowIgnore: boolean) => {
      for (let i = 0; i < arr.length; i++) {
        const x = arr[i];
        if ((x < 0 || x >= hi) && !(allowIgnore && x === IGNORE)) {
          throw new InvalidArgument(
            `batch ${field}[${i}] must be in [0, ${hi})${
              allowIgnore ? " or -100" : ""
            }: current value is ${x}`,
          );
        }
      }
    };
    len("inputIds", batch.inputIds, NT, "B*T");
    len("tokenTypeIds", batch.tokenTypeIds, NT, "B*T");
    len("attentionMask", batch.attentionMask, NT, "B*T");
    range("inputIds", batch.inputIds, c.vocab_size, false);
    range("tokenTypeIds", batch.tokenTypeIds, c.type_vocab_size, false);
    if (!training) return;
    const K = this.K;
    switch (this.head.task) {
      case "pretrain":
        len("mlmLabels", batch.mlmLabels, NT, "B*T");
        range("mlmLabels", batch.mlmLabels!, c.vocab_size, true);
        if (batch.nspLabels) {
          len("nspLabels", batch.nspLabels, B, "B");
          range("nspLabels", batch.nspLabels, 2, false);
        }
        break;
      case "classify":
      case "pair":
        len("labels", batch.labels, B, "B");
        range("labels", batch.labels!, K, false);
        break;
      case "multilabel":
        len("multiLabels", batch.multiLabels, B * K, "B*K");
        break;
      case "ner":
        len("tokenLabels", batch.tokenLabels, NT, "B*T");
        range("tokenLabels", batch.tokenLabels!, K, true);
        break;
      case "qa":
        len("startPositions", batch.startPositions, B, "B");
        range("startPositions", batch.startPositions!, T, false);
        len("endPositions", batch.endPositions, B, "B");
        range("endPositions", batch.endPositions!, T, false);
        break;
    }
  }

  /** The next `n` dropout counters, recorded for backward. */
  private takeDropout(n: number): number {
    const off = this.rngOffset;
    this.siteOffsets[this.site++] = off;
    this.rngOffset += n;
    return off;
  }

  // ------------------------------------------------------------------------------------------ encoder

  private gemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    a: number,
    lda: number,
    b: number,
    ldb: number,
    beta: number,
    c: number,
    ldc: number,
  ): void {
    this.blas.sgemm(transA, transB, M, N, K, 1, a, lda, b, ldb, beta, c, ldc);
  }

  /**
   * B*NH GEMMs, one per (sequence b, head h): operand X of (b, h) starts at byte address x + 4*(b*sXb + h*sXh).
   */
  private perHead(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    a: number,
    lda: number,
    sAb: number,
    sAh: number,
    b: number,
    ldb: number,
    sBb: number,
    sBh: number,
    c: number,
    ldc: number,
    sCb: number,
    sCh: number,
    B: number,
    NH: number,
  ): void {
    if (this.batched) {
      this.batched(
        transA,
        transB,
        M,
        N,
        K,
        a,
        lda,
        sAb,
        sAh,
        b,
        ldb,
        sBb,
        sBh,
        0,
        c,
        ldc,
        sCb,
        sCh,
        B,
        NH,
        this.threads,
      );
      return;
    }
    for (let i = 0; i < B; i++) {
      for (let h = 0; h < NH; h++) {
        this.gemm(
          transA,
          transB,
          M,
          N,
          K,
          a + 4 * (i * sAb + h * sAh),
          lda,
          b + 4 * (i * sBb + h * sBh),
          ldb,
          0,
          c + 4 * (i * sCb + h * sCh),
          ldc,
        );
      }
    }
  }

  /** Thread counts are process-wide in OpenBLAS and OpenMP: an engine re-asserts its own before each pass. */
  private useThreads(): void {
    if (threadsInUse === this.threads) return;
    this.blas.setThreads(this.threads);
    this.kernels.setThreads(this.threads);
    threadsInUse = this.threads;
  }

  /**
   * The heads' input (NT, C) from the batch: X[L], or LN_f(X[L]) in A.xf for pre-LN; with `train`, dropout on and
   * counters recorded.
   */
  private encoderForward(batch: Batch, train: boolean): void {
    this.useThreads();
    const k = this.kernels, c = this.config, P = this.P, A = this.A;
    const { B, T } = batch;
    const C = c.hidden_size, F = c.intermediate_size, eps = c.layer_norm_eps;
    const NT = B * T;
    const pH = train ? c.hidden_dropout_prob : 0, pA = train ? c.attention_probs_dropout_prob : 0;
    this.fwdDropH = pH;
    this.fwdDropA = pA;
    const seed = this.rngSeed;
    this.site = 0;
    this.lastMark = performance.now();

    const am = A.addmask.a;
    for (let i = 0; i < NT; i++) am[i] = batch.attentionMask[i] ? 0 : MASK_VALUE;
    // embeddings: LayerNorm(word + position + type), then dropout
    k.embedFwd(A.emb.a, batch.inputIds, batch.tokenTypeIds, P.wte.a, P.wpe.a, P.wtt.a, B, T, C);
    k.layernormFwd(
      this.X[0].a,
      A.embMean.a,
      A.embRstd.a,
      A.emb.a,
      P.embLnW.a,
      P.embLnB.a,
      NT,
      C,
      c.layer_norm_eps,
    );
    if (pH > 0) k.dropout(this.X[0].a, this.X[0].a, NT * C, pH, seed, this.takeDropout(NT * C));
    this.mark("embeddings");

    for (let l = 0; l < c.num_hidden_layers; l++) {
      const W = P.layers[l], S = this.LA[l], x = this.X[l], out = this.X[l + 1];
      if (this.preLN) {
        // x1 = LN1(x); pre1 = x + dropout(Attn(x1) Wo^T + bo)
        k.layernormFwd(S.x1.a, S.mean1.a, S.rstd1.a, x.a, W.ln1w.a, W.ln1b.a, NT, C, eps);
        this.mark("layernorm");
        this.attentionForward(S, W, S.x1, B, T, pA);
        this.projectAdd(S.pre1, S.atty, C, W.attow, W.attob, x, NT, pH, "gemm_attn_out");
        // x2 = LN2(pre1); X[l+1] = pre1 + dropout(gelu(x2 W1^T + b1) W2^T + b2)
        k.layernormFwd(S.x2.a, S.mean2.a, S.rstd2.a, S.pre1.a, W.ln2w.a, W.ln2b.a, NT, C, eps);
        this.mark("layernorm");
        this.ffnForward(S, W, S.x2, NT);
        this.projectAdd(out, S.g, F, W.projw, W.projb, S.pre1, NT, pH, "gemm_ffn2");
        continue;
      }
      // pre1 = x + dropout(Attn(x) Wo^T + bo); x1 = LN1(pre1)
      this.attentionForward(S, W, x, B, T, pA);
      this.projectAdd(S.pre1, S.atty, C, W.attow, W.attob, x, NT, pH, "gemm_attn_out");
      k.layernormFwd(S.x1.a, S.mean1.a, S.rstd1.a, S.pre1.a, W.ln1w.a, W.ln1b.a, NT, C, eps);
      this.mark("layernorm");
      // pre2 = x1 + dropout(gelu(x1 W1^T + b1) W2^T + b2); X[l+1] = LN2(pre2)
      this.ffnForward(S, W, S.x1, NT);
      this.projectAdd(S.pre2, S.g, F, W.projw, W.projb, S.x1, NT, pH, "gemm_ffn2");
      k.layernormFwd(out.a, S.mean2.a, S.rstd2.a, S.pre2.a, W.ln2w.a, W.ln2b.a, NT, C, eps);
      this.mark("layernorm");
    }
    if (this.preLN) {
      // the residual stream is never normalised inside a pre-LN stack: the heads read LN_f(X[L])
      const XL = this.X[c.num_hidden_layers];
      k.layernormFwd(A.xf.a, A.xfMean.a, A.xfRstd.a, XL.a, P.lnfW.a, P.lnfB.a, NT, C, eps);
      this.mark("layernorm");
    }
  }

  /**
   * Self-attention of one layer on `inp` (NT, C): S.qkv, S.att (and S.attd with dropout) and S.atty (NT, C), the
   * heads side by side, before the output projection.
   */
  private attentionForward(S: LayerActs, W: LayerParams, inp: Buf, B: number, T: number, pA: number): void {
    const k = this.kernels, c = this.config;
    const C = c.hidden_size, NH = c.num_attention_heads, HS = C / NH;
    const NT = B * T, C3 = 3 * C;
    // qkv (NT, 3C) = inp Wqkv^T + bqkv
    this.gemm(false, true, NT, C3, C, inp.p, C, W.qkvw.p, C, 0, S.qkv.p, C3);
    this.mark("gemm_qkv");
    k.biasAdd(S.qkv.a, W.qkvb.a, NT, C3);
    this.mark("bias_add");
    // scores (B, NH, T, T) = Q K^T per (b, h); Q and K of a head are strided columns of qkv
    const TT = T * T, qkvB = T * C3;
    this.perHead(
      false,
      true,
      T,
      T,
      HS,
      S.qkv.p,
      C3,
      qkvB,
      HS,
      S.qkv.p + 4 * C,
      C3,
      qkvB,
      HS,
      S.att.p,
      T,
      NH * TT,
      TT,
      B,
      NH,
    );
    this.mark("gemm_attn_scores");
    const nAtt = B * NH * T * T;
    k.softmaxFwd(S.att.a, this.A.addmask.a, B, NH, T, 1 / Math.sqrt(HS));
    this.mark("softmax");
    let probs = S.att;
    if (pA > 0) {
      k.dropout(S.attd.a, S.att.a, nAtt, pA, this.rngSeed, this.takeDropout(nAtt));
      probs = S.attd;
      this.mark("dropout");
    }
    // atty (NT, C), head h in columns h*HS.. = P_bh (T, T) V_bh (T, HS)
    const vBase = S.qkv.p + 4 * 2 * C;
    this.perHead(
      false,
      false,
      T,
      HS,
      T,
      probs.p,
      T,
      NH * TT,
      TT,
      vBase,
      C3,
      qkvB,
      HS,
      S.atty.p,
      C,
      T * C,
      HS,
      B,
      NH,
    );
    this.mark("gemm_attn_values");
  }

  /** h = inp W1^T + b1 (NT, F); g = gelu(h) */
  private ffnForward(S: LayerActs, W: LayerParams, inp: Buf, NT: number): void {
    const C = this.config.hidden_size, F = this.config.intermediate_size;
    this.gemm(false, true, NT, F, C, inp.p, C, W.fcw.p, C, 0, S.h.p, F);
    this.mark("gemm_ffn1");
    this.kernels.biasGeluFwd(S.h.a, S.g.a, W.fcb.a, NT, F);
    this.mark("gelu");
  }

  /**
   * A branch joining the residual stream: out (NT, C) = residual + dropout(inp (NT, Kin) W^T + b). Takes the
   * dropout site that backward replays.
   */
  private projectAdd(
    out: Buf,
    inp: Buf,
    Kin: number,
    w: Buf,
    b: Buf,
    residual: Buf,
    NT: number,
    pH: number,
    gemmName: string,
  ): void {
    const C = this.config.hidden_size, tmp = this.A.tmp;
    this.gemm(false, true, NT, C, Kin, inp.p, Kin, w.p, Kin, 0, tmp.p, C);
    this.mark(gemmName);
    const site = pH > 0 ? this.takeDropout(NT * C) : 0;
    this.kernels.residualDropout(out.a, tmp.a, b.a, residual.a, NT, C, pH, this.rngSeed, site);
    this.mark("residual_dropout");
  }

  /**
   * From dX = dLoss/d(heads' input) (NT, C) down to the embedding tables. Replays the forward's dropout counters.
   */
  private encoderBackward(batch: Batch): void {
    const k = this.kernels, c = this.config, P = this.P, G = this.G, A = this.A;
    const { B, T } = batch;
    const C = c.hidden_size, F = c.intermediate_size;
    const NT = B * T, L = c.num_hidden_layers;
    const pH = this.fwdDropH, pA = this.fwdDropA;
    const seed = this.rngSeed;
    // forward took sites in the order: emb, then per layer (att, attout, ffnout)
    const siteOf = (l: number, which: number) => {
      let i = pH > 0 ? 1 : 0;
      const perLayer = (pA > 0 ? 1 : 0) + (pH > 0 ? 2 : 0);
      i += l * perLayer;
      if (which === 0) return this.siteOffsets[i];
      i += pA > 0 ? 1 : 0;
      return this.siteOffsets[i + (which - 1)];
    };
    const dX = A.dX, dPre = A.dPre, dTmp = A.dTmp, dH = A.dH;
    if (this.preLN) {
      // the heads read xf = LN_f(X[L]): dX = dLN_f(dxf), in place
      const XL = this.X[L];
      k.layernormBwd(dX.a, G.lnfW.a, G.lnfB.a, dX.a, XL.a, A.xfMean.a, A.xfRstd.a, P.lnfW.a, NT, C);
      this.mark("layernorm_bwd");
    }

    for (let l = L - 1; l >= 0; l--) {
      const W = P.layers[l], D = G.layers[l], S = this.LA[l], x = this.X[l];
      if (this.preLN) {
        // X[l+1] = pre1 + dropout(g W2^T + b2): the branch sees dropout(dX), the residual sees dX
        this.projectBackward(dX, siteOf(l, 2), S.g, F, W.projw, D.projw, D.projb, dH, NT); // dH = dg
        this.ffnBackward(S, W, D, S.x2, dTmp, null, NT); // dTmp = dx2
        // x2 = LN2(pre1): dPre = dX (residual) + dLN2(dx2)
        k.layernormBwd(dPre.a, D.ln2w.a, D.ln2b.a, dTmp.a, S.pre1.a, S.mean2.a, S.rstd2.a, W.ln2w.a, NT, C);
        this.addInto(dPre, dX, NT);
        this.mark("layernorm_bwd");
        // pre1 = x + dropout(atty Wo^T + bo)
        this.projectBackward(dPre, siteOf(l, 1), S.atty, C, W.attow, D.attow, D.attob, dX, NT); // dX = datty
        this.attentionBackward(S, W, D, S.x1, B, T, dTmp, null); // dTmp = dx1
        // x1 = LN1(x): dX = dPre (residual) + dLN1(dx1)
        k.layernormBwd(dX.a, D.ln1w.a, D.ln1b.a, dTmp.a, x.a, S.mean1.a, S.rstd1.a, W.ln1w.a, NT, C);
        this.addInto(dX, dPre, NT);
        this.mark("layernorm_bwd");
        continue;
      }
      // X[l+1] = LN2(pre2): dPre = dLN2(dX)
      k.layernormBwd(dPre.a, D.ln2w.a, D.ln2b.a, dX.a, S.pre2.a, S.mean2.a, S.rstd2.a, W.ln2w.a, NT, C);
      this.mark("layernorm_bwd");
      // pre2 = x1 + dropout(g W2^T + b2): the branch sees dropout(dPre), the residual sees dPre
      this.projectBackward(dPre, siteOf(l, 2), S.g, F, W.projw, D.projw, D.projb, dH, NT); // dH = dg
      this.ffnBackward(S, W, D, S.x1, dX, dPre, NT); // dX = dx1 = dPre + dh W1
      // x1 = LN1(pre1), pre1 = x + dropout(atty Wo^T + bo)
      k.layernormBwd(dPre.a, D.ln1w.a, D.ln1b.a, dX.a, S.pre1.a, S.mean1.a, S.rstd1.a, W.ln1w.a, NT, C);
      this.mark("layernorm_bwd");
      this.projectBackward(dPre, siteOf(l, 1), S.atty, C, W.attow, D.attow, D.attob, dX, NT); // dX = datty
      this.attentionBackward(S, W, D, x, B, T, dX, dPre); // dX = dx = dPre + dqkv Wqkv
    }
    // X[0] = dropout(LayerNorm(word + position + type))
    if (pH > 0) k.dropout(dTmp.a, dX.a, NT * C, pH, seed, this.siteOffsets[0]);
    else dTmp.a.set(dX.a.subarray(0, NT * C));
    k.layernormBwd(
      dPre.a,
      G.embLnW.a,
      G.embLnB.a,
      dTmp.a,
      A.emb.a,
      A.embMean.a,
      A.embRstd.a,
      P.embLnW.a,
      NT,
      C,
    );
    k.embedBwd(
      G.wte.a,
      G.wpe.a,
      G.wtt.a,
      dPre.a,
      batch.inputIds,
      batch.tokenTypeIds,
      B,
      T,
      C,
      this.config.pad_token_id,
    );
    this.mark("embeddings_bwd");
  }

  /**
   * Backward of projectAdd's branch: from dOut = dLoss/d(out), the branch sees dTmp = dropout(dOut) (the
   * forward's site replayed), so db += colsum(dTmp), dW += dTmp^T inp, and dInp (NT, Kin) = dTmp W.
   */
  private projectBackward(
    dOut: Buf,
    site: number,
    inp: Buf,
    Kin: number,
    w: Buf,
    dw: Buf,
    db: Buf,
    dInp: Buf,
    NT: number,
  ): void {
    const k = this.kernels, C = this.config.hidden_size, dTmp = this.A.dTmp, pH = this.fwdDropH;
    if (pH > 0) k.dropout(dTmp.a, dOut.a, NT * C, pH, this.rngSeed, site);
    else dTmp.a.set(dOut.a.subarray(0, NT * C));
    this.mark("dropout");
    k.biasGrad(db.a, dTmp.a, NT, C);
    this.mark("bias_grad");
    this.gemm(true, false, C, Kin, NT, dTmp.p, C, inp.p, Kin, 1, dw.p, Kin);
    this.mark(Kin === C ? "gemm_attn_out_dw" : "gemm_ffn2_dw");
    this.gemm(false, false, NT, Kin, C, dTmp.p, C, w.p, Kin, 0, dInp.p, Kin);
    this.mark(Kin === C ? "gemm_attn_out_dx" : "gemm_ffn2_dx");
  }

  /**
   * Backward of ffnForward from dg in A.dH: dh = dg * gelu'(h), db1 += colsum(dh), dW1 += dh^T inp, and
   * dIn (NT, C) = dh W1, plus `residual` when given (the skip connection around the branch).
   */
  private ffnBackward(
    S: LayerActs,
    W: LayerParams,
    D: LayerParams,
    inp: Buf,
    dIn: Buf,
    residual: Buf | null,
    NT: number,
  ): void {
    const k = this.kernels, C = this.config.hidden_size, F = this.config.intermediate_size, dH = this.A.dH;
    k.geluBwd(dH.a, S.h.a, dH.a, NT * F);
    this.mark("gelu_bwd");
    k.biasGrad(D.fcb.a, dH.a, NT, F);
    this.mark("bias_grad");
    this.gemm(true, false, F, C, NT, dH.p, F, inp.p, C, 1, D.fcw.p, C);
    this.mark("gemm_ffn1_dw");
    if (residual) dIn.a.set(residual.a.subarray(0, NT * C));
    this.gemm(false, false, NT, C, F, dH.p, F, W.fcw.p, C, residual ? 1 : 0, dIn.p, C);
    this.mark("gemm_ffn1_dx");
  }

  /**
   * Backward of attentionForward from datty in A.dX: probs' = dropout(softmax(scale Q K^T + mask)),
   * atty = probs' V. Fills dQKV, adds the QKV weight and bias grads (dWqkv += dqkv^T inp), and writes
   * dIn (NT, C) = dqkv Wqkv, plus `residual` when given. dIn may be A.dX: datty is consumed first.
   */
  private attentionBackward(
    S: LayerActs,
    W: LayerParams,
    D: LayerParams,
    inp: Buf,
    B: number,
    T: number,
    dIn: Buf,
    residual: Buf | null,
  ): void {
    const k = this.kernels, c = this.config, A = this.A;
    const C = c.hidden_size, NH = c.num_attention_heads, HS = C / NH;
    const NT = B * T, C3 = 3 * C, pA = this.fwdDropA, scale = 1 / Math.sqrt(HS);
    const dX = A.dX, dQKV = A.dQKV, dAtt = A.dAtt;
    const probs = pA > 0 ? S.attd : S.att;
    const TT = T * T, qkvB = T * C3;
    const vBase = S.qkv.p + 4 * 2 * C;
    // dprobs' (B, NH, T, T) = datty_bh V_bh^T ; dV_bh = probs'^T datty_bh
    this.perHead(
      false,
      true,
      T,
      T,
      HS,
      dX.p,
      C,
      T * C,
      HS,
      vBase,
      C3,
      qkvB,
      HS,
      dAtt.p,
      T,
      NH * TT,
      TT,
      B,
      NH,
    );
    this.perHead(
      true,
      false,
      T,
      HS,
      T,
      probs.p,
      T,
      NH * TT,
      TT,
      dX.p,
      C,
      T * C,
      HS,
      dQKV.p + 4 * 2 * C,
      C3,
      qkvB,
      HS,
      B,
      NH,
    );
    this.mark("gemm_attn_values_bwd");
    // dscores, with the 1/sqrt(HS) folded in; with dropout, dprobs = dprobs' * keep / (1 - p), keep read off attd
    if (pA > 0) k.softmaxDropoutBwd(dAtt.a, dAtt.a, S.att.a, S.attd.a, B * NH * T, T, scale, 1 / (1 - pA));
    else k.softmaxBwd(dAtt.a, dAtt.a, S.att.a, B * NH * T, T, scale);
    this.mark("softmax_bwd");
    // dQ = dS K ; dK = dS^T Q
    const kBase = S.qkv.p + 4 * C;
    this.perHead(
      false,
      false,
      T,
      HS,
      T,
      dAtt.p,
      T,
      NH * TT,
      TT,
      kBase,
      C3,
      qkvB,
      HS,
      dQKV.p,
      C3,
      qkvB,
      HS,
      B,
      NH,
    );
    this.perHead(
      true,
      false,
      T,
      HS,
      T,
      dAtt.p,
      T,
      NH * TT,
      TT,
      S.qkv.p,
      C3,
      qkvB,
      HS,
      dQKV.p + 4 * C,
      C3,
      qkvB,
      HS,
      B,
      NH,
    );
    this.mark("gemm_attn_scores_bwd");
    k.biasGrad(D.qkvb.a, dQKV.a, NT, C3);
    this.mark("bias_grad");
    this.gemm(true, false, C3, C, NT, dQKV.p, C3, inp.p, C, 1, D.qkvw.p, C); // dWqkv += dqkv^T inp
    this.mark("gemm_qkv_dw");
    if (residual) dIn.a.set(residual.a.subarray(0, NT * C));
    this.gemm(false, false, NT, C, C3, dQKV.p, C3, W.qkvw.p, C, residual ? 1 : 0, dIn.p, C);
    this.mark("gemm_qkv_dx");
  }

  /** out += a over NT rows of C (the skip connection of a pre-LN backward): residualDropout with a zero bias. */
  private addInto(out: Buf, a: Buf, NT: number): void {
    this.kernels.residualDropout(out.a, a.a, this.A.zeroC.a, out.a, NT, this.config.hidden_size, 0, 0, 0);
  }

  // ------------------------------------------------------------------------------------------ heads

  /** What the heads read (NT, C): the last layer's output, after the final LayerNorm for pre-LN. */
  private headInput(): Buf {
    return this.preLN ? this.A.xf : this.X[this.config.num_hidden_layers];
  }

  /**
   * The sentence vector (B, C) in A.pooled: HF's pooler, tanh(X_L[:, 0] Wp^T + bp), or for a mean-pooling head
   * the mean of X_L over each row's real tokens.
   */
  private poolerForward(B: number, T: number, mask: Int32Array): void {
    const C = this.config.hidden_size, XL = this.headInput(), pooled = this.A.pooled;
    if (this.meanPooling) {
      pooled.a.fill(0, 0, B * C);
      for (let b = 0; b < B; b++) {
        const row = pooled.a.subarray(b * C, (b + 1) * C);
        let n = 0;
        for (let t = 0; t < T; t++) {
          if (!mask[b * T + t]) continue;
          n++;
          const x = XL.a.subarray((b * T + t) * C, (b * T + t + 1) * C);
          for (let c = 0; c < C; c++) row[c] += x[c];
        }
        if (n === 0) continue; // a fully padded row stays zero
        for (let c = 0; c < C; c++) row[c] /= n;
      }
      return;
    }
    this.gemm(false, true, B, C, C, XL.p, T * C, this.P.poolW.p, C, 0, pooled.p, C);
    this.kernels.biasAdd(pooled.a, this.P.poolB.a, B, C);
    for (let i = 0; i < B * C; i++) pooled.a[i] = Math.tanh(pooled.a[i]);
  }

  /** dPooled (B, C) → pooler grads and dX[:, 0] (or every real token's dX for mean pooling) += ... */
  private poolerBackward(B: number, T: number, mask: Int32Array): void {
    const C = this.config.hidden_size, XL = this.headInput();
    const dp = this.A.dPooled, pooled = this.A.pooled.a;
    if (this.meanPooling) {
      const dX = this.A.dX.a;
      for (let b = 0; b < B; b++) {
        let n = 0;
        for (let t = 0; t < T; t++) n += mask[b * T + t] ? 1 : 0;
        const share = dp.a.subarray(b * C, (b + 1) * C);
        for (let t = 0; t < T; t++) {
          if (!mask[b * T + t]) continue;
          const d = dX.subarray((b * T + t) * C, (b * T + t + 1) * C);
          for (let c = 0; c < C; c++) d[c] += share[c] / n;
        }
      }
      return;
    }
    for (let i = 0; i < B * C; i++) dp.a[i] *= 1 - pooled[i] * pooled[i]; // tanh' = 1 - tanh^2
    this.kernels.biasGrad(this.G.poolB.a, dp.a, B, C);
    this.gemm(true, false, C, C, B, dp.p, C, XL.p, T * C, 1, this.G.poolW.p, C);
    this.gemm(false, false, B, C, C, dp.p, C, this.P.poolW.p, C, 1, this.A.dX.p, T * C);
  }

  /**
   * Softmax cross-entropy over `rows` logits of width K at `logits` with int labels; mean over counted rows.
   * Overwrites logits with d(scale * loss) when grad. Returns loss, correct, count.
   */
  private crossEntropy(
    logits: Buf,
    labels: Int32Array,
    rows: number,
    K: number,
    scale: number,
    grad: boolean,
  ) {
    let count = 0;
    for (let r = 0; r < rows; r++) if (labels[r] >= 0) count++;
    const A = this.A;
    this.kernels.softmaxCe(
      logits.a,
      null,
      labels,
      A.losses.a,
      A.preds.a,
      rows,
      K,
      count ? scale / count : 0,
      grad,
    );
    let loss = 0, correct = 0;
    for (let r = 0; r < rows; r++) {
      if (labels[r] < 0) continue;
      loss += A.losses.a[r];
      if (A.preds.a[r] === labels[r]) correct++;
    }
    return { loss: count ? loss / count : 0, correct, count };
  }

  /**
   * The head on X[L]: loss and stats; with `grad`, dX = dLoss/dX[L] and head parameter grads (scaled by
   * `scale`, 1/gradAccumSteps in training). With `out`, fills the inference outputs instead of needing labels.
   */
  private headForwardBackward(batch: Batch, train: boolean, grad: boolean, scale: number): StepStats {
    const k = this.kernels, c = this.config, A = this.A, P = this.P, G = this.G;
    const { B, T } = batch;
    const C = c.hidden_size, NT = B * T, K = this.K;
    const XL = this.headInput();
    const headDrop = classifierDropout(c);
    const pH = train ? headDrop : 0;
    if (grad) k.fill(A.dX.a, NT * C, 0);
    const task = this.head.task;
    let stats: StepStats;
    if (task === "pretrain") {
      const mlm = this.mlmForwardBackward(batch, grad, scale);
      this.mark("mlm_head");
      stats = { loss: mlm.loss, mlmLoss: mlm.loss, mlmCorrect: mlm.correct, mlmCount: mlm.count };
      if (batch.nspLabels) {
        this.poolerForward(B, T, batch.attentionMask);
        const logits = A.smallLogits;
        this.gemm(false, true, B, 2, C, A.pooled.p, C, P.nspW.p, C, 0, logits.p, 2);
        k.biasAdd(logits.a, P.nspB.a, B, 2);
        const labels = this.I.labelsI.subarray(0, B);
        labels.set(batch.nspLabels);
        const nsp = this.crossEntropy(logits, labels, B, 2, scale, grad);
        stats.loss += nsp.loss;
        stats.nspLoss = nsp.loss;
        stats.nspCorrect = nsp.correct;
        stats.nspCount = nsp.count;
        if (grad) {
          k.biasGrad(G.nspB.a, logits.a, B, 2);
          this.gemm(true, false, 2, C, B, logits.p, 2, A.pooled.p, C, 1, G.nspW.p, C);
          this.gemm(false, false, B, C, 2, logits.p, 2, P.nspW.p, C, 0, A.dPooled.p, C);
          this.poolerBackward(B, T, batch.attentionMask);
        }
        this.mark("nsp_head");
      }
      return stats;
    }
    if (task === "classify" || task === "pair" || task === "multilabel") {
      this.poolerForward(B, T, batch.attentionMask);
      const pd = A.pooledDrop;
      const site = pH > 0 ? this.takeDropout(B * C) : 0;
      k.dropout(pd.a, A.pooled.a, B * C, pH, this.rngSeed, site);
      const logits = A.smallLogits;
      this.gemm(false, true, B, K, C, pd.p, C, P.clsW.p, C, 0, logits.p, K);
      k.biasAdd(logits.a, P.clsB.a, B, K);
      if (task === "multilabel") {
        stats = this.bceWithLogits(logits.a, batch.multiLabels!, B * K, scale, grad);
      } else {
        const labels = this.I.labelsI.subarray(0, B);
        labels.set(batch.labels!);
        const ce = this.crossEntropy(logits, labels, B, K, scale, grad);
        stats = { loss: ce.loss, correct: ce.correct, count: ce.count };
      }
      if (grad) {
        k.biasGrad(G.clsB.a, logits.a, B, K);
        this.gemm(true, false, K, C, B, logits.p, K, pd.p, C, 1, G.clsW.p, C);
        this.gemm(false, false, B, C, K, logits.p, K, P.clsW.p, C, 0, A.dPooled.p, C);
        k.dropout(A.dPooled.a, A.dPooled.a, B * C, pH, this.rngSeed, site);
        this.poolerBackward(B, T, batch.attentionMask);
      }
      this.mark("head");
      return stats;
    }
    if (task === "qa") return this.qaForwardBackward(batch, grad, scale);
    // ner: logits (NT, K) = dropout(X_L) Wc^T + bc
    const hx = A.headX;
    const site = pH > 0 ? this.takeDropout(NT * C) : 0;
    k.dropout(hx.a, XL.a, NT * C, pH, this.rngSeed, site);
    const logits = A.smallLogits;
    this.gemm(false, true, NT, K, C, hx.p, C, P.clsW.p, C, 0, logits.p, K);
    k.biasAdd(logits.a, P.clsB.a, NT, K);
    const labels = batch.tokenLabels!;
    if (this.head.crf) {
      const emit = logits.a.subarray(0, NT * K);
      const crfP = { transitions: P.crfT.a, start: P.crfS.a, end: P.crfE.a };
      const dEmit = grad ? A.dEmit.a.subarray(0, NT * K) : null;
      const loss = crfLoss(
        emit,
        labels,
        batch.attentionMask,
        B,
        T,
        K,
        crfP,
        scale,
        dEmit,
        grad ? { transitions: G.crfT.a, start: G.crfS.a, end: G.crfE.a } : null,
      );
      const paths = this.I.labelsI.subarray(0, NT);
      crfDecode(emit, batch.attentionMask, B, T, K, crfP, paths);
      let correct = 0, count = 0;
      for (let i = 0; i < NT; i++) {
        if (labels[i] < 0) continue;
        count++;
        if (paths[i] === labels[i]) correct++;
      }
      stats = { loss, correct, count };
      if (dEmit) logits.a.set(dEmit);
    } else {
      const ce = this.crossEntropy(logits, labels, NT, K, scale, grad);
      stats = { loss: ce.loss, correct: ce.correct, count: ce.count };
    }
    if (grad) {
      k.biasGrad(G.clsB.a, logits.a, NT, K);
      this.gemm(true, false, K, C, NT, logits.p, K, hx.p, C, 1, G.clsW.p, C);
      this.gemm(false, false, NT, C, K, logits.p, K, P.clsW.p, C, 0, A.dTmp.p, C);
      k.dropout(A.dX.a, A.dTmp.a, NT * C, pH, this.rngSeed, site);
    }
    this.mark("head");
    return stats;
  }

  /**
   * The span head (HF BertForQuestionAnswering): logits (NT, 2) = X_L Wq^T + bq, no dropout (HF applies none
   * there); column 0 is the start and column 1 the end logit of each token. Each row's start logits (T) are a
   * softmax over its positions (padding included, as HF's CrossEntropyLoss sees them), likewise the end
   * logits; loss = (mean start CE + mean end CE) / 2. correct/count: positions predicted exactly, of 2B.
   */
  private qaForwardBackward(batch: Batch, grad: boolean, scale: number): StepStats {
    const k = this.kernels, A = this.A, P = this.P, G = this.G;
    const { B, T } = batch;
    const C = this.config.hidden_size, NT = B * T;
    const XL = this.headInput();
    const logits = A.smallLogits; // (NT, 2)
    this.gemm(false, true, NT, 2, C, XL.p, C, P.clsW.p, C, 0, logits.p, 2);
    k.biasAdd(logits.a, P.clsB.a, NT, 2);
    const split = A.qaSplit.a; // (2, B, T): the columns of logits as rows of T
    for (let i = 0; i < NT; i++) {
      split[i] = logits.a[2 * i];
      split[NT + i] = logits.a[2 * i + 1];
    }
    const stats: StepStats = { loss: 0, correct: 0, count: 0 };
    const ends: Array<[number, Int32Array]> = [[0, batch.startPositions!], [1, batch.endPositions!]];
    for (const [half, positions] of ends) {
      const rows = split.subarray(half * NT, (half + 1) * NT); // (B, T)
      const labels = this.I.labelsI.subarray(0, B);
      labels.set(positions);
      // each CE is half the loss, so its gradient carries half the scale
      const ce = this.crossEntropy({ a: rows, p: addressOf(rows) }, labels, B, T, scale / 2, grad);
      stats.loss += ce.loss / 2;
      stats.correct! += ce.correct;
      stats.count! += ce.count;
    }
    if (grad) {
      // in the forward pass split held the two columns of logits, so d(logits) is split put back as columns
      for (let i = 0; i < NT; i++) {
        logits.a[2 * i] = split[i];
        logits.a[2 * i + 1] = split[NT + i];
      }
      k.biasGrad(G.clsB.a, logits.a, NT, 2);
      this.gemm(true, false, 2, C, NT, logits.p, 2, XL.p, C, 1, G.clsW.p, C); // dWq (2, C) += dL^T X_L
      this.gemm(false, false, NT, C, 2, logits.p, 2, P.clsW.p, C, 0, A.dX.p, C); // dX (NT, C) = dL Wq
    }
    this.mark("head");
    return stats;
  }

  /** Mean over n of BCEWithLogits; with grad, x is overwritten with d(scale * loss)/dx. */
  private bceWithLogits(
    x: Float32Array,
    y: Float32Array,
    n: number,
    scale: number,
    grad: boolean,
  ): StepStats {
    let loss = 0, correct = 0;
    for (let i = 0; i < n; i++) {
      const z = x[i];
      loss += Math.max(z, 0) - z * y[i] + Math.log1p(Math.exp(-Math.abs(z)));
      if ((z > 0 ? 1 : 0) === y[i]) correct++;
      if (grad) x[i] = (scale / n) * (1 / (1 + Math.exp(-z)) - y[i]);
    }
    return { loss: loss / n, correct, count: n };
  }

  /**
   * MLM on the labelled positions only: hm = X_L[idx] (M, C); z = LayerNorm(gelu(hm Wt^T + bt));
   * logits = z wte^T + bias (M, V) in chunks of rows, each chunk turned into its gradient at once.
   */
  private mlmForwardBackward(batch: Batch, grad: boolean, scale: number) {
    const k = this.kernels, c = this.config, A = this.A, P = this.P, G = this.G;
    const { B, T } = batch;
    const C = c.hidden_size, V = c.vocab_size, NT = B * T;
    const idx = this.I.mlmIdx, lab = this.I.mlmLabels;
    let M = 0;
    for (let i = 0; i < NT; i++) {
      if (batch.mlmLabels![i] !== IGNORE) {
        idx[M] = i;
        lab[M] = batch.mlmLabels![i];
        M++;
      }
    }
    if (M === 0) return { loss: 0, correct: 0, count: 0 };
    this.mlmTransform(M, idx);
    this.mark("mlm_transform");
    let loss = 0, correct = 0;
    const logits = A.logits, R = this.logitsRows;
    for (let r0 = 0; r0 < M; r0 += R) {
      const rows = Math.min(R, M - r0);
      const z = A.mz.p + 4 * r0 * C;
      this.gemm(false, true, rows, V, C, z, C, P.wte.p, C, 0, logits.p, V);
      this.mark("gemm_mlm_logits");
      k.softmaxCe(
        logits.a,
        P.decB.a,
        lab.subarray(r0, r0 + rows),
        A.losses.a,
        A.preds.a,
        rows,
        V,
        scale / M,
        grad,
      );
      this.mark("mlm_softmax_ce");
      for (let r = 0; r < rows; r++) {
        loss += A.losses.a[r];
        if (A.preds.a[r] === lab[r0 + r]) correct++;
      }
      if (grad) {
        // logits = z wte^T + bias, so dbias += colsum, dwte += dlogits^T z, dz = dlogits wte
        k.biasGrad(G.decB.a, logits.a, rows, V);
        this.mark("bias_grad");
        this.gemm(true, false, V, C, rows, logits.p, V, z, C, 1, G.wte.p, C);
        this.mark("gemm_mlm_dwte");
        this.gemm(false, false, rows, C, V, logits.p, V, P.wte.p, C, 0, A.dPre.p + 4 * r0 * C, C);
        this.mark("gemm_mlm_dz");
      }
    }
    if (grad) {
      // z = LN(g), g = gelu(t), t = hm Wt^T + bt; dhm scattered back into dX
      const dz = A.dPre, dhm = A.dTmp;
      k.layernormBwd(dz.a, G.mlmLnW.a, G.mlmLnB.a, dz.a, A.mg.a, A.mMean.a, A.mRstd.a, P.mlmLnW.a, M, C);
      k.geluBwd(dz.a, A.mt.a, dz.a, M * C);
      k.biasGrad(G.mlmB.a, dz.a, M, C);
      this.gemm(true, false, C, C, M, dz.p, C, A.hm.p, C, 1, G.mlmW.p, C);
      this.gemm(false, false, M, C, C, dz.p, C, P.mlmW.p, C, 0, dhm.p, C);
      k.scatterAddRows(A.dX.a, dhm.a, idx, M, C);
    }
    return { loss: loss / M, correct, count: M };
  }

  /** mz (M, C) = LayerNorm(gelu(X_L[idx] Wt^T + bt)) */
  private mlmTransform(M: number, idx: Int32Array): void {
    const k = this.kernels, c = this.config, A = this.A, P = this.P, C = c.hidden_size;
    k.gatherRows(A.hm.a, this.headInput().a, idx, M, C);
    this.gemm(false, true, M, C, C, A.hm.p, C, P.mlmW.p, C, 0, A.mt.p, C);
    k.biasGeluFwd(A.mt.a, A.mg.a, P.mlmB.a, M, C);
    k.layernormFwd(A.mz.a, A.mMean.a, A.mRstd.a, A.mg.a, P.mlmLnW.a, P.mlmLnB.a, M, C, c.layer_norm_eps);
  }

  // ------------------------------------------------------------------------------------------ public steps

  trainStep(batch: Batch): StepStats {
    requireTraining(this.mode, "trainStep");
    this.checkBatch(batch, true);
    const accum = this.opt.gradAccumSteps;
    // zeroed at the start of each accumulation cycle, so gradients left by computeGradients never leak in
    if (this.microStep === 0) this.kernels.fill(this.grads, this.numParams, 0);
    this.encoderForward(batch, true);
    const stats = this.headForwardBackward(batch, true, true, 1 / accum);
    this.encoderBackward(batch);
    this.microStep++;
    if (this.microStep >= accum) {
      this.optimizerStep();
      this.microStep = 0;
    }
    return stats;
  }

  private optimizerStep(): void {
    const k = this.kernels, o = this.opt;
    const norm = Math.sqrt(k.sumsq(this.grads, this.numParams));
    const clip = o.maxGradNorm > 0 ? Math.min(1, o.maxGradNorm / (norm + 1e-6)) : 1;
    const lr = this.learningRate();
    const t = this.step + 1;
    const bc1 = 1 - Math.pow(o.beta1, t), bc2 = 1 - Math.pow(o.beta2, t);
    const n0 = this.numDecay, n1 = this.numParams - this.numDecay;
    const sub = (a: Float32Array, from: number, n: number) => a.subarray(from, from + n);
    k.adamw(
      this.params,
      this.grads,
      this.m,
      this.v,
      n0,
      lr,
      o.beta1,
      o.beta2,
      o.eps,
      o.weightDecay,
      bc1,
      bc2,
      clip,
    );
    if (n1 > 0) {
      k.adamw(
        sub(this.params, n0, n1),
        sub(this.grads, n0, n1),
        sub(this.m, n0, n1),
        sub(this.v, n0, n1),
        n1,
        lr,
        o.beta1,
        o.beta2,
        o.eps,
        0,
        bc1,
        bc2,
        clip,
      );
    }
    this.step++;
    this.mark("adamw");
  }

  evaluate(batch: Batch): StepStats {
    this.checkBatch(batch, true);
    this.encoderForward(batch, false);
    return this.headForwardBackward(batch, false, false, 1);
  }

  forward(batch: Batch, options?: { wantHidden?: boolean; mlmLogits?: boolean }): ForwardOutput {
    this.checkBatch(batch, false);
    this.encoderForward(batch, false);
    const c = this.config, A = this.A, P = this.P, k = this.kernels;
    const { B, T } = batch;
    const C = c.hidden_size, NT = B * T, K = this.K;
    const XL = this.headInput();
    const out: ForwardOutput = { logits: new Float32Array(0) };
    const task = this.head.task;
    const sentence = task !== "ner" && task !== "qa";
    if (sentence) this.poolerForward(B, T, batch.attentionMask);
    if (task === "pretrain") {
      this.gemm(false, true, B, 2, C, A.pooled.p, C, P.nspW.p, C, 0, A.smallLogits.p, 2);
      k.biasAdd(A.smallLogits.a, P.nspB.a, B, 2);
      out.nspLogits = A.smallLogits.a.slice(0, B * 2);
      if (options?.mlmLogits) out.logits = this.fullMlmLogits(NT);
    } else if (task === "qa") {
      this.gemm(false, true, NT, 2, C, XL.p, C, P.clsW.p, C, 0, A.smallLogits.p, 2);
      k.biasAdd(A.smallLogits.a, P.clsB.a, NT, 2);
      out.logits = A.smallLogits.a.slice(0, NT * 2); // (B, T, 2)
      out.startLogits = new Float32Array(NT);
      out.endLogits = new Float32Array(NT);
      for (let i = 0; i < NT; i++) {
        out.startLogits[i] = out.logits[2 * i];
        out.endLogits[i] = out.logits[2 * i + 1];
      }
    } else if (task === "ner") {
      this.gemm(false, true, NT, K, C, XL.p, C, P.clsW.p, C, 0, A.smallLogits.p, K);
      k.biasAdd(A.smallLogits.a, P.clsB.a, NT, K);
      out.logits = A.smallLogits.a.slice(0, NT * K);
      if (this.head.crf) {
        out.paths = new Int32Array(NT);
        const crfP = { transitions: P.crfT.a, start: P.crfS.a, end: P.crfE.a };
        crfDecode(out.logits, batch.attentionMask, B, T, K, crfP, out.paths);
      }
    } else {
      this.gemm(false, true, B, K, C, A.pooled.p, C, P.clsW.p, C, 0, A.smallLogits.p, K);
      k.biasAdd(A.smallLogits.a, P.clsB.a, B, K);
      out.logits = A.smallLogits.a.slice(0, B * K);
    }
    if (options?.wantHidden) {
      out.hidden = XL.a.slice(0, NT * C);
      if (sentence) out.pooled = A.pooled.a.slice(0, B * C);
    }
    return out;
  }

  /** (NT, V) MLM logits at every position, for fill-mask. */
  private fullMlmLogits(NT: number): Float32Array {
    const c = this.config, C = c.hidden_size, V = c.vocab_size;
    const idx = this.I.mlmIdx;
    for (let i = 0; i < NT; i++) idx[i] = i;
    this.mlmTransform(NT, idx);
    const out = new Float32Array(NT * V);
    const outP = addressOf(out);
    this.gemm(false, true, NT, V, C, this.A.mz.p, C, this.P.wte.p, C, 0, outP, V);
    this.kernels.biasAdd(out, this.P.decB.a, NT, V);
    return out;
  }

  /** The live parameter tensor (no copy): tests perturb weights in place through it. */
  parameterView(name: string): Float32Array {
    const s = this.specByName.get(name);
    if (!s) throw new InvalidArgument(`parameter '${name}' does not exist in this model`);
    return this.params.subarray(s.offset, s.offset + s.size);
  }

  /** Names of the parameters, in HF terms. */
  parameterNames(): string[] {
    return this.specs.map((s) => s.name);
  }

  /** Parameter gradients accumulated so far, keyed like the weights (tests and debugging). */
  getGradients(): Weights {
    requireTraining(this.mode, "getGradients");
    const out: Weights = new Map();
    for (const s of this.specs) {
      out.set(s.name, { shape: [...s.shape], data: this.grads.slice(s.offset, s.offset + s.size) });
    }
    return out;
  }

  /**
   * Forward + backward without an optimizer step: fills the gradients (zeroed first) of the loss. With `train`
   * false dropout is off; with `train` true and `dropoutOffset` the dropout masks are those of that RNG counter,
   * so a gradient check can hold them fixed across evaluations. The RNG state is left as it was.
   */
  computeGradients(batch: Batch, train = false, dropoutOffset?: number): StepStats {
    requireTraining(this.mode, "computeGradients");
    this.checkBatch(batch, true);
    this.grads.fill(0);
    const saved = this.rngOffset;
    if (dropoutOffset !== undefined) this.rngOffset = dropoutOffset;
    this.encoderForward(batch, train);
    const stats = this.headForwardBackward(batch, train, true, 1);
    this.encoderBackward(batch);
    this.rngOffset = saved;
    return stats;
  }

  /** Bytes held by the engine's arenas. */
  memoryBytes(): number {
    const moments = this.moments ? this.moments.m.length + this.moments.v.length : 0;
    return 4 * (this.params.length + this.grads.length + moments) + (this.acts.buffer?.byteLength ?? 0);
  }

  dispose(): void {
    this.disposed = true;
    this.params = this.grads = new Float32Array(0);
    this.moments = undefined;
    this.acts.buffer = null;
    this.X = [];
    this.LA = [];
    this.A = {};
  }
}

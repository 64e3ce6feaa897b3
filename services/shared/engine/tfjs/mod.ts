/**
 * The TensorFlow.js engine: the BERT of bert.ts behind the Engine interface, on the `tensorflow` (tfjs-node /
 * tfjs-node-gpu), `wasm` or `cpu` backend. Weights are tf.Variables named by HF tensor names; gradients come from
 * tf.variableGrads; AdamW, the schedule and clipping follow optimizer.ts (torch.optim.AdamW semantics).
 *
 * Memory: every step runs inside tf.tidy and disposes what tfjs hands back (gradients, the loss), so
 * tf.memory().numTensors is the same before and after a train step, forward or setWeights (mod_test.ts).
 *
 * Letters: B batch, T sequence length, C hidden, V vocab, K labels, M masked positions, N = B*T.
 */
import type * as tfTypes from "@tensorflow/tfjs-core";
import { InvalidArgument } from "../../errors.ts";
import type {
  BackendName,
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
import { checkedLearningRate, engineMode, requireTraining } from "../engine.ts";
import type { BertConfig } from "../../model/config.ts";
import { classifierDropout, validateConfig } from "../../model/config.ts";
import { checkWeights, expectedTensors, initWeights } from "../../model/checkpoint.ts";
import { IGNORE_INDEX, validateBatch } from "../../model/batch.ts";
import { viterbiDecode } from "../../model/crf.ts";
import { type TfjsBackendName, useBackend } from "./backend.ts";
import {
  activeRows,
  binaryCrossEntropy,
  crfLoss,
  crossEntropy,
  encode,
  gatherRows,
  mlmLogits,
  type RunContext,
} from "./bert.ts";
import { clipScale, resolveOptimizer, scheduledLearningRate, usesWeightDecay } from "./optimizer.ts";

type Tf = typeof tfTypes;
type Tensor = tfTypes.Tensor;

export interface TfjsEngineOptions extends EngineOptions {
  /** Which tfjs backend; default `cpu`. */
  backend?: TfjsBackendName;
}

/** Dropout RNG state: every dropout call draws its mask from seed `${seed}:${counter}` and bumps the counter. */
interface DropoutRng {
  seed: number;
  counter: number;
}

let engineCount = 0;

/** Loads the tfjs backend and builds an engine with weights initialised from `seed` (replace them with setWeights). */
export async function createTfjsEngine(options: TfjsEngineOptions): Promise<TfjsEngine> {
  const backend = options.backend ?? "cpu";
  const tf = await useBackend(backend, options.threads ? { threads: options.threads } : {});
  return new TfjsEngine(tf, backend, options);
}

/** Tensors the loss function hands out of the gradient tape for the statistics. */
interface StatTensors {
  loss: Tensor;
  mlmLoss?: Tensor;
  nspLoss?: Tensor;
  mlmPred?: Tensor; // (M) argmax at masked positions
  nspPred?: Tensor; // (B)
  pred?: Tensor; // classify/pair: (B) argmax
  logits?: Tensor; // multilabel (B, K) / ner (B, T, K) for accuracy and Viterbi / qa (B, T, 2)
}

export class TfjsEngine implements Engine {
  readonly backend: BackendName;
  readonly config: BertConfig;
  readonly head: HeadSpec;
  readonly mode: EngineMode;
  private readonly tf: Tf;
  private readonly optimizer: OptimizerConfig;
  private readonly prefix: string;
  private readonly variables = new Map<string, tfTypes.Variable>();
  /** AdamW moments; none on a serving engine. */
  private readonly moments = new Map<string, { m: tfTypes.Variable; v: tfTypes.Variable }>();
  /** Gradient sums of the micro-batches since the last optimizer step. */
  private accumulated = new Map<string, Tensor>();
  private step = 0;
  private lrOverride: number | null = null;
  private microStep = 0;
  private rng: DropoutRng;
  private readonly maxBatch: number | undefined;
  private readonly maxSeqLen: number | undefined;
  private timings: Record<string, number> = {};
  private disposed = false;

  constructor(tf: Tf, backend: TfjsBackendName, options: TfjsEngineOptions) {
    this.tf = tf;
    this.backend = backend;
    this.config = validateConfig({ ...options.config });
    this.head = { ...options.head };
    this.mode = engineMode(options.mode);
    this.optimizer = resolveOptimizer(options.optimizer);
    this.rng = { seed: options.seed ?? 0, counter: 0 };
    this.maxBatch = options.maxBatch;
    this.maxSeqLen = options.maxSeqLen;
    this.prefix = `bertforge${engineCount++}/`;
    const weights = initWeights(this.config, this.head, options.seed ?? 0);
    // A variable shares its initial tensor's data; tidy disposes that tensor so dispose() frees everything.
    tf.tidy(() => {
      for (const [name, t] of weights) {
        this.variables.set(name, tf.variable(tf.tensor(t.data, t.shape), true, this.prefix + name));
        if (this.mode === "train") {
          this.moments.set(name, {
            m: tf.variable(tf.zeros(t.shape), false, `${this.prefix}${name}/m`),
            v: tf.variable(tf.zeros(t.shape), false, `${this.prefix}${name}/v`),
          });
        }
      }
    });
  }

  private context(training: boolean): RunContext {
    const tf = this.tf;
    const dropout = (x: Tensor, rate: number): Tensor => {
      if (!training || rate === 0) return x;
      return tf.dropout(x, rate, undefined, `${this.rng.seed}:${this.rng.counter++}`);
    };
    const params = (name: string): Tensor => {
      const v = this.variables.get(name);
      if (!v) throw new InvalidArgument(`model has no tensor '${name}' for head '${this.head.task}'`);
      return v;
    };
    return { tf, config: this.config, params, dropout };
  }

  private checkBatch(batch: Batch, forTraining: boolean): void {
    if (this.disposed) throw new InvalidArgument("engine is disposed");
    validateBatch(batch, this.config, this.head, forTraining);
    if (this.maxBatch !== undefined && batch.B > this.maxBatch) {
      throw new InvalidArgument(`batch B must be <= maxBatch ${this.maxBatch}: current value is ${batch.B}`);
    }
    if (this.maxSeqLen !== undefined && batch.T > this.maxSeqLen) {
      throw new InvalidArgument(
        `batch T must be <= maxSeqLen ${this.maxSeqLen}: current value is ${batch.T}`,
      );
    }
  }

  /** The CRF chain (and the positions Viterbi decodes): the real tokens. */
  private chainPositions(batch: Batch): Float32Array {
    return Float32Array.from(batch.attentionMask);
  }

  /** The loss of one batch, plus the tensors the statistics need (kept, so they outlive the tidy scope). */
  private lossAndStats(batch: Batch, training: boolean): StatTensors {
    const tf = this.tf;
    const ctx = this.context(training);
    const { B, T } = batch;
    const K = this.head.numLabels ?? 0;
    const { hidden, pooled } = encode(ctx, batch, this.head);
    const keep = <X extends Tensor>(t: X) => tf.keep(t);
    switch (this.head.task) {
      case "pretrain": {
        const masked = activeRows(batch.mlmLabels!);
        const out: StatTensors = { loss: tf.scalar(0) };
        if (masked.rows.length > 0) {
          const logits = mlmLogits(
            ctx,
            gatherRows(tf, hidden, masked.rows),
          ); // (M, V)
          out.mlmLoss = keep(crossEntropy(tf, logits, masked.labels));
          out.mlmPred = keep(tf.argMax(logits, 1));
          out.loss = tf.add(out.loss, out.mlmLoss);
        }
        if (batch.nspLabels) {
          const nsp = this.linear(pooled!, "cls.seq_relationship"); // (B, 2)
          out.nspLoss = keep(crossEntropy(tf, nsp, Int32Array.from(batch.nspLabels)));
          out.nspPred = keep(tf.argMax(nsp, 1));
          out.loss = tf.add(out.loss, out.nspLoss);
        }
        return out;
      }
      case "classify":
      case "pair": {
        const logits = this.linear(
          ctx.dropout(pooled!, classifierDropout(this.config)) as tfTypes.Tensor2D,
          "classifier",
        );
        return {
          loss: crossEntropy(tf, logits, Int32Array.from(batch.labels!)),
          pred: keep(tf.argMax(logits, 1)),
        };
      }
      case "multilabel": {
        const logits = this.linear(
          ctx.dropout(pooled!, classifierDropout(this.config)) as tfTypes.Tensor2D,
          "classifier",
        );
        return { loss: binaryCrossEntropy(tf, logits, batch.multiLabels!), logits: keep(logits) };
      }
      case "ner": {
        const logits = this.linear(
          ctx.dropout(hidden, classifierDropout(this.config)) as tfTypes.Tensor2D,
          "classifier",
        ); // (N, K)
        if (this.head.crf) {
          const emissions = tf.reshape(logits, [B, T, K]) as tfTypes.Tensor3D;
          return {
            loss: crfLoss(ctx, emissions, this.chainPositions(batch), batch.tokenLabels!),
            logits: keep(emissions),
          };
        }
        const labelled = activeRows(batch.tokenLabels!);
        const loss = labelled.rows.length > 0
          ? crossEntropy(
            tf,
            gatherRows(tf, logits, labelled.rows),
            labelled.labels,
          )
          : tf.scalar(0);
        return { loss, logits: keep(tf.reshape(logits, [B, T, K])) };
      }
      case "qa": {
        // HF BertForQuestionAnswering: qa_outputs on the last layer, no dropout; loss = (start CE + end CE) / 2
        const { start, end } = this.spanLogits(hidden, B, T);
        const loss = tf.div(
          tf.add(
            crossEntropy(tf, start, Int32Array.from(batch.startPositions!)),
            crossEntropy(tf, end, Int32Array.from(batch.endPositions!)),
          ),
          2,
        ) as tfTypes.Scalar;
        return { loss, logits: keep(tf.stack([start, end], 2)) };
      }
    }
  }

  /** qa_outputs over every token (N, 2), split into start and end logits, each (B, T). */
  private spanLogits(hidden: tfTypes.Tensor2D, B: number, T: number) {
    const tf = this.tf;
    const logits = tf.reshape(this.linear(hidden, "qa_outputs"), [B, T, 2]) as tfTypes.Tensor3D;
    const [start, end] = tf.split(logits, 2, 2).map((t) => tf.reshape(t, [B, T]) as tfTypes.Tensor2D);
    return { start: start!, end: end! };
  }

  private linear(x: tfTypes.Tensor2D, prefix: string): tfTypes.Tensor2D {
    const tf = this.tf;
    return tf.add(
      tf.matMul(x, this.variables.get(`${prefix}.weight`)! as tfTypes.Tensor2D, false, true),
      this.variables.get(`${prefix}.bias`)!,
    );
  }

  /** Reads the statistics out of the kept tensors and disposes them. */
  private collectStats(batch: Batch, t: StatTensors, loss: number): StepStats {
    const stats: StepStats = { loss };
    const read = (x: Tensor | undefined) => {
      if (!x) return undefined;
      const data = x.dataSync();
      x.dispose();
      return data;
    };
    const { B, T } = batch;
    const K = this.head.numLabels ?? 0;
    const mlmLoss = read(t.mlmLoss), nspLoss = read(t.nspLoss);
    if (this.head.task === "pretrain") {
      stats.mlmLoss = mlmLoss?.[0] ?? 0;
      const pred = read(t.mlmPred);
      const masked = activeRows(batch.mlmLabels!);
      stats.mlmCount = masked.labels.length;
      stats.mlmCorrect = pred ? masked.labels.reduce((n, l, i) => n + (pred[i] === l ? 1 : 0), 0) : 0;
      if (batch.nspLabels) {
        stats.nspLoss = nspLoss![0]!;
        const nspPred = read(t.nspPred)!;
        stats.nspCount = B;
        stats.nspCorrect = batch.nspLabels.reduce((n, l, i) => n + (nspPred[i] === l ? 1 : 0), 0);
      }
    } else if (this.head.task === "classify" || this.head.task === "pair") {
      const pred = read(t.pred)!;
      stats.count = B;
      stats.correct = batch.labels!.reduce((n, l, i) => n + (pred[i] === l ? 1 : 0), 0);
    } else if (this.head.task === "multilabel") {
      const logits = read(t.logits)!;
      stats.count = B * K;
      stats.correct = batch.multiLabels!.reduce((n, z, i) => n + ((logits[i]! > 0 ? 1 : 0) === z ? 1 : 0), 0);
    } else if (this.head.task === "qa") {
      const logits = read(t.logits)! as Float32Array; // (B, T, 2)
      const argmax = (b: number, column: number) => {
        let best = 0;
        for (let i = 1; i < T; i++) {
          if (logits[(b * T + i) * 2 + column]! > logits[(b * T + best) * 2 + column]!) best = i;
        }
        return best;
      };
      stats.count = 2 * B;
      stats.correct = 0;
      for (let b = 0; b < B; b++) {
        if (argmax(b, 0) === batch.startPositions![b]) stats.correct++;
        if (argmax(b, 1) === batch.endPositions![b]) stats.correct++;
      }
    } else {
      const logits = read(t.logits)! as Float32Array; // (B, T, K)
      const predicted = this.head.crf
        ? this.viterbi(logits, this.chainPositions(batch), B, T)
        : argmaxRows(logits, K);
      let correct = 0, count = 0;
      batch.tokenLabels!.forEach((l, i) => {
        if (l === IGNORE_INDEX) return;
        count++;
        if (predicted[i] === l) correct++;
      });
      stats.correct = correct;
      stats.count = count;
    }
    return stats;
  }

  private viterbi(emissions: Float32Array, active: Float32Array, B: number, T: number): Int32Array {
    const K = this.head.numLabels!;
    const get = (name: string) => this.variables.get(name)!.dataSync() as Float32Array;
    return viterbiDecode(
      emissions,
      active,
      B,
      T,
      K,
      get("crf.start_transitions"),
      get("crf.end_transitions"),
      get("crf.transitions"),
    );
  }

  trainStep(batch: Batch): StepStats {
    requireTraining(this.mode, "trainStep");
    this.checkBatch(batch, true);
    const tf = this.tf;
    const started = performance.now();
    let stats: StatTensors | undefined;
    const names = [...this.variables.keys()];
    const list = names.map((n) => this.variables.get(n)!);
    const { value, grads } = tf.variableGrads(() => {
      stats = this.lossAndStats(batch, true);
      return stats.loss as tfTypes.Scalar;
    }, list);
    const loss = value.dataSync()[0]!;
    value.dispose();
    // Gradients come back keyed by variable name; sum them into the accumulator under HF names.
    for (const name of names) {
      const g = grads[this.prefix + name];
      if (!g) continue; // not on the loss path this batch (e.g. the pooler without NSP labels)
      const previous = this.accumulated.get(name);
      if (previous) {
        this.accumulated.set(name, tf.add(previous, g));
        previous.dispose();
        g.dispose();
      } else this.accumulated.set(name, g);
    }
    this.time("forward_backward", started);
    const result = this.collectStats(batch, stats!, loss);
    this.microStep++;
    if (this.microStep >= this.optimizer.gradAccumSteps) this.applyAdamW();
    return result;
  }

  /**
   * d(loss)/d(tensor) of one batch at the current weights, dropout off, nothing updated: the parity tests compare
   * it with PyTorch's autograd. Not part of the Engine interface.
   */
  gradients(batch: Batch): Weights {
    this.checkBatch(batch, true);
    const tf = this.tf;
    const names = [...this.variables.keys()];
    let stats: StatTensors | undefined;
    const { value, grads } = tf.variableGrads(() => {
      stats = this.lossAndStats(batch, false);
      return stats.loss as tfTypes.Scalar;
    }, names.map((n) => this.variables.get(n)!));
    value.dispose();
    for (const t of Object.values(stats!)) if (t && t !== stats!.loss) (t as Tensor).dispose();
    const out: Weights = new Map();
    for (const name of names) {
      const g = grads[this.prefix + name];
      if (!g) continue;
      out.set(name, { shape: [...g.shape], data: Float32Array.from(g.dataSync() as Float32Array) });
      g.dispose();
    }
    return out;
  }

  /** One AdamW step on the mean of the accumulated gradients, clipped to maxGradNorm, then the accumulator cleared. */
  private applyAdamW(): void {
    const tf = this.tf;
    const started = performance.now();
    const { beta1, beta2, eps, weightDecay, maxGradNorm } = this.optimizer;
    const lr = this.learningRate();
    const t = this.step + 1;
    const mean = 1 / this.microStep;
    tf.tidy(() => {
      const squares = [...this.accumulated.values()].map((g) => tf.sum(tf.square(g)));
      const norm = squares.length ? Math.sqrt(tf.addN(squares).dataSync()[0]!) * mean : 0;
      const scale = clipScale(norm, maxGradNorm) * mean;
      const correction1 = 1 - beta1 ** t, correction2 = 1 - beta2 ** t;
      for (const [name, sum] of this.accumulated) {
        const p = this.variables.get(name)!;
        const { m, v } = this.moments.get(name)!;
        const g = tf.mul(sum, scale);
        m.assign(tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)));
        v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)));
        const update = tf.div(tf.div(m, correction1), tf.add(tf.sqrt(tf.div(v, correction2)), eps));
        const decayed = usesWeightDecay(name) && weightDecay > 0 ? tf.mul(p, 1 - lr * weightDecay) : p;
        p.assign(tf.sub(decayed, tf.mul(update, lr)));
      }
    });
    for (const g of this.accumulated.values()) g.dispose();
    this.accumulated.clear();
    this.microStep = 0;
    this.step++;
    this.time("adamw", started);
  }

  evaluate(batch: Batch): StepStats {
    this.checkBatch(batch, true);
    const tf = this.tf;
    let loss = 0;
    let stats: StatTensors | undefined;
    tf.tidy(() => {
      stats = this.lossAndStats(batch, false);
      loss = stats.loss.dataSync()[0]!;
    });
    return this.collectStats(batch, stats!, loss);
  }

  forward(batch: Batch, options: { wantHidden?: boolean; mlmLogits?: boolean } = {}): ForwardOutput {
    this.checkBatch(batch, false);
    const tf = this.tf;
    const started = performance.now();
    const { B, T } = batch;
    const K = this.head.numLabels ?? 0;
    const result: ForwardOutput = { logits: new Float32Array(0) };
    tf.tidy(() => {
      const ctx = this.context(false);
      const { hidden, pooled } = encode(ctx, batch, this.head);
      if (options.wantHidden) {
        result.hidden = hidden.dataSync() as Float32Array;
        if (pooled) result.pooled = pooled.dataSync() as Float32Array;
      }
      switch (this.head.task) {
        case "pretrain":
          if (options.mlmLogits) result.logits = mlmLogits(ctx, hidden).dataSync() as Float32Array; // (B*T, V)
          result.nspLogits = this.linear(pooled!, "cls.seq_relationship").dataSync() as Float32Array; // (B, 2)
          break;
        case "classify":
        case "pair":
        case "multilabel":
          result.logits = this.linear(pooled!, "classifier").dataSync() as Float32Array; // (B, K)
          break;
        case "ner":
          result.logits = this.linear(hidden, "classifier").dataSync() as Float32Array; // (B, T, K)
          break;
        case "qa": {
          const { start, end } = this.spanLogits(hidden, B, T);
          result.logits = tf.stack([start, end], 2).dataSync() as Float32Array; // (B, T, 2)
          result.startLogits = start.dataSync() as Float32Array; // (B, T)
          result.endLogits = end.dataSync() as Float32Array; // (B, T)
          break;
        }
      }
    });
    if (this.head.task === "ner") {
      const active = this.chainPositions(batch);
      result.paths = this.head.crf
        ? this.viterbi(result.logits, active, B, T)
        : Int32Array.from(argmaxRows(result.logits, K), (tag, i) => (active[i] ? tag : -1));
    }
    this.time("forward", started);
    return result;
  }

  learningRate(): number {
    return this.lrOverride ?? scheduledLearningRate(this.optimizer, this.step);
  }

  setLearningRate(lr: number | null): void {
    this.lrOverride = checkedLearningRate(lr);
  }

  getWeights(): Weights {
    const weights: Weights = new Map();
    for (const [name, v] of this.variables) {
      weights.set(name, { shape: [...v.shape], data: Float32Array.from(v.dataSync() as Float32Array) });
    }
    return weights;
  }

  setWeights(weights: Weights, options: { allowMissingHead?: boolean } = {}): void {
    checkWeights(weights, this.config, this.head, options);
    const tf = this.tf;
    tf.tidy(() => {
      for (const [name, v] of this.variables) {
        const t = weights.get(name);
        if (t) v.assign(tf.tensor(t.data, v.shape));
      }
    });
  }

  getTrainState(): TrainState {
    requireTraining(this.mode, "getTrainState");
    const moments = new Map<string, { m: Float32Array; v: Float32Array }>();
    for (const [name, { m, v }] of this.moments) {
      moments.set(name, {
        m: Float32Array.from(m.dataSync() as Float32Array),
        v: Float32Array.from(v.dataSync() as Float32Array),
      });
    }
    return { step: this.step, microStep: this.microStep, moments, rng: { ...this.rng } };
  }

  setTrainState(state: TrainState): void {
    requireTraining(this.mode, "setTrainState");
    const tf = this.tf;
    const rng = state.rng as Partial<DropoutRng> | undefined;
    if (!rng || !Number.isFinite(rng.seed) || !Number.isInteger(rng.counter)) {
      throw new InvalidArgument(
        `train state rng must be {seed, counter}: current value is ${JSON.stringify(state.rng)}`,
      );
    }
    if (!Number.isInteger(state.step) || state.step < 0) {
      throw new InvalidArgument(`train state step must be an integer >= 0: current value is ${state.step}`);
    }
    const expected = expectedTensors(this.config, this.head);
    const problems: string[] = [];
    for (const [name, shape] of expected) {
      const mv = state.moments.get(name);
      const n = shape.reduce((a, b) => a * b, 1);
      if (!mv) problems.push(`missing moments for '${name}'`);
      else if (mv.m.length !== n || mv.v.length !== n) {
        problems.push(`moments of '${name}' must hold ${n} values`);
      }
    }
    if (problems.length) {
      throw new InvalidArgument(`train state does not fit the model: ${problems.join("; ")}`);
    }
    tf.tidy(() => {
      for (const [name, { m, v }] of this.moments) {
        const saved = state.moments.get(name)!;
        m.assign(tf.tensor(saved.m, m.shape));
        v.assign(tf.tensor(saved.v, v.shape));
      }
    });
    for (const g of this.accumulated.values()) g.dispose();
    this.accumulated.clear();
    this.step = state.step;
    // Partially accumulated gradients are not part of the state: resume at an optimizer-step boundary.
    this.microStep = 0;
    this.rng = { seed: rng.seed!, counter: rng.counter! };
  }

  profile(): Record<string, number> {
    const out = this.timings;
    this.timings = {};
    return out;
  }

  private time(what: string, started: number): void {
    this.timings[what] = (this.timings[what] ?? 0) + performance.now() - started;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of this.variables.values()) v.dispose();
    for (const { m, v } of this.moments.values()) (m.dispose(), v.dispose());
    for (const g of this.accumulated.values()) g.dispose();
    this.variables.clear();
    this.moments.clear();
    this.accumulated.clear();
  }
}

/** Argmax over the last axis of a row-major (rows, K) array. */
function argmaxRows(values: ArrayLike<number>, K: number): Int32Array {
  const rows = values.length / K;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = -Infinity, arg = 0;
    for (let k = 0; k < K; k++) {
      const x = values[r * K + k]!;
      if (x > best) (best = x), (arg = k);
    }
    out[r] = arg;
  }
  return out;
}

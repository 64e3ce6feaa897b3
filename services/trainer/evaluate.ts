/**
 * Evaluation of fine-tuned models: predictions from `engine.forward` (dropout off) scored with the task's
 * metrics: accuracy, precision/recall/F1, micro/macro F1 and loss; entity-level scores for NER as seqeval
 * computes them (services/shared/data/metrics.ts), a confusion matrix for single-label tasks.
 *
 * Every batch has B rows (a partial last batch is filled with dummy `[CLS] [SEP]` rows whose outputs are
 * ignored) and at most T tokens, the engine's preallocated maximum.
 *
 * A NER sentence longer than T comes as several windows (encodeNerExamples): their per-token logits are
 * stitched (stitchWindows: each token from the window where it has the most context), a CRF decodes the
 * stitched emissions as one chain (viterbiAcrossWindows), and the sentence is scored whole, so entities past
 * the first window count in the gold and can be found.
 */
import type { Batch, Engine, HeadSpec } from "../shared/engine/engine.ts";
import {
  alignedTagSequences,
  entityScores,
  getEntities,
  multiLabelScores,
  nerBatch,
  type NerExample,
  type NerFeature,
  type SourceRef,
  stitchWindows,
  textBatch,
  type TextExample,
  type TextFeature,
  type TokenSpan,
} from "../shared/data/mod.ts";
import { InvalidArgument } from "../shared/errors.ts";
import { type CrfParams, crfParamsOf, viterbiAcrossWindows } from "../shared/model/crf.ts";

export type Feature = TextFeature | NerFeature;

/**
 * A batch of `rows`, filled up to B with dummy rows (ignored labels) when there are fewer. Its length is the
 * longest row rounded up to a multiple of 8 (at most T): short texts do not pay for padding to T.
 */
export function makeBatch(
  rows: readonly Feature[],
  head: HeadSpec,
  B: number,
  maxT: number,
  ids: { cls: number; sep: number; pad: number },
): Batch {
  const K = head.numLabels ?? 0;
  const longest = rows.reduce((m, r) => Math.max(m, r.ids.length), 2);
  const T = Math.min(maxT, Math.ceil(longest / 8) * 8);
  if (head.task === "ner") {
    const filled = [...rows as NerFeature[]];
    while (filled.length < B) {
      filled.push({ ids: [ids.cls, ids.sep], tokenLabels: [-100, -100], source: { file: "", line: 0 } });
    }
    return nerBatch(filled, T, ids.pad);
  }
  const filled = [...rows as TextFeature[]];
  while (filled.length < B) {
    const dummy: TextFeature = {
      ids: [ids.cls, ids.sep],
      typeIds: [0, 0],
      label: 0,
      source: { file: "", line: 0 },
    };
    if (head.task === "multilabel") dummy.multiLabel = new Uint8Array(K);
    filled.push(dummy);
  }
  return textBatch(filled, T, ids.pad);
}

// ------------------------------------------------------------------------------------------ metrics

function f1(p: number, r: number): number {
  return p + r > 0 ? (2 * p * r) / (p + r) : 0;
}

export interface ClassificationReport {
  metrics: Record<string, number>;
  perLabel: Record<string, number>;
  confusion?: number[][];
}

/**
 * Single-label metrics from true and predicted indexes. `precision`/`recall`/`f1` are those of the positive
 * class for binary tasks (label index 1, as scikit-learn's default `pos_label=1`), macro averages otherwise.
 */
export function classificationMetrics(
  gold: number[],
  pred: number[],
  labels: string[],
): ClassificationReport {
  const K = labels.length;
  const confusion = Array.from({ length: K }, () => new Array<number>(K).fill(0));
  for (let i = 0; i < gold.length; i++) {
    if (gold[i]! >= 0) confusion[gold[i]!]![pred[i]!]!++;
  }
  const perLabel: Record<string, number> = {};
  let macroP = 0, macroR = 0, macroF = 0, correct = 0, total = 0;
  const p: number[] = [], r: number[] = [];
  for (let k = 0; k < K; k++) {
    const tp = confusion[k]![k]!;
    const support = confusion[k]!.reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, row) => a + row[k]!, 0);
    p[k] = predicted ? tp / predicted : 0;
    r[k] = support ? tp / support : 0;
    correct += tp;
    total += support;
    macroP += p[k]!;
    macroR += r[k]!;
    macroF += f1(p[k]!, r[k]!);
    perLabel[`${labels[k]}/precision`] = p[k]!;
    perLabel[`${labels[k]}/recall`] = r[k]!;
    perLabel[`${labels[k]}/f1`] = f1(p[k]!, r[k]!);
    perLabel[`${labels[k]}/support`] = support;
  }
  const accuracy = total ? correct / total : 0;
  const binary = K === 2;
  const metrics = {
    accuracy,
    precision: binary ? p[1]! : macroP / K,
    recall: binary ? r[1]! : macroR / K,
    f1: binary ? f1(p[1]!, r[1]!) : macroF / K,
    // Single-label micro F1 equals accuracy (every error is one FP and one FN).
    micro_f1: accuracy,
    macro_f1: macroF / K,
  };
  return { metrics, perLabel, confusion };
}

// --------------------------------------------------------------------------------------- evaluation

/** How the model did on one example (evaluateFeatures' `onExample`), for listing its mistakes. */
export interface ExampleOutcome {
  /** The example's place in its file (every window of a long one shares it). */
  source: SourceRef;
  /** classify/pair: one label; multilabel: the label set; ner: the tag of each word, as scored. */
  gold: string[];
  predicted: string[];
  /** classify/pair: the softmax probability of the predicted label. */
  confidence?: number;
}

/** One example the model gets wrong, as EvaluateResponse.errors lists it. */
export interface Mistake {
  line: number;
  text: string;
  textB: string;
  /** classify/pair: one label; multilabel: the label set; ner: entities as `TYPE text [start,end)`. */
  gold: string[];
  predicted: string[];
  /** classify/pair: the probability of the predicted label; 0 otherwise. */
  confidence: number;
}

/**
 * The mistakes among `outcomes` (a wrong label, label set or entity list), with their examples' text: the most
 * confident first for classify and pair, where a confident mistake is often a wrong gold label, file order for
 * multilabel and ner.
 */
export function mistakesOf(
  task: "classify" | "multilabel" | "pair" | "ner",
  examples: readonly (TextExample | NerExample)[],
  outcomes: readonly ExampleOutcome[],
): Mistake[] {
  const key = (source: SourceRef) => `${source.line}:${source.file}`;
  const byPlace = new Map(examples.map((e) => [key(e.source), e]));
  const same = (a: readonly string[], b: readonly string[]) =>
    a.length === b.length && [...a].sort().join("\u0000") === [...b].sort().join("\u0000");
  const mistakes: Mistake[] = [];
  for (const outcome of outcomes) {
    const example = byPlace.get(key(outcome.source));
    if (task === "ner") {
      const units = (example as NerExample | undefined)?.units ?? [];
      // Entities are spans of units: characters join as they are, words with a space.
      const joiner = units.every((u) => [...u].length === 1) ? "" : " ";
      // A unit the tokenizer drops (a control character) has no tag: positions then count scored units
      // only, and the entity's text is left out rather than shown shifted.
      const aligned = outcome.gold.length === units.length;
      const entities = (tags: readonly string[]) =>
        getEntities(tags).map(([type, start, end]) =>
          aligned
            ? `${type} ${units.slice(start, end + 1).join(joiner)} [${start},${end + 1})`
            : `${type} [${start},${end + 1})`
        );
      const [gold, predicted] = [entities(outcome.gold), entities(outcome.predicted)];
      if (same(gold, predicted)) continue;
      mistakes.push({
        line: outcome.source.line,
        text: units.join(joiner),
        textB: "",
        gold,
        predicted,
        confidence: 0,
      });
      continue;
    }
    if (same(outcome.gold, outcome.predicted)) continue;
    const text = example as TextExample | undefined;
    mistakes.push({
      line: outcome.source.line,
      text: text?.text ?? "",
      textB: text?.textB ?? "",
      gold: outcome.gold,
      predicted: outcome.predicted,
      confidence: outcome.confidence ?? 0,
    });
  }
  return mistakes.sort((a, b) => b.confidence - a.confidence || a.line - b.line);
}

export interface EvaluationResult extends ClassificationReport {
  /** Examples scored: sentences or texts, however many windows they took. */
  examples: number;
}

function logSoftmaxAt(logits: Float32Array, offset: number, K: number, target: number): number {
  let max = -Infinity;
  for (let k = 0; k < K; k++) max = Math.max(max, logits[offset + k]!);
  let sum = 0;
  for (let k = 0; k < K; k++) sum += Math.exp(logits[offset + k]! - max);
  return logits[offset + target]! - max - Math.log(sum);
}

function argmax(logits: Float32Array, offset: number, K: number): number {
  let best = 0;
  for (let k = 1; k < K; k++) if (logits[offset + k]! > logits[offset + best]!) best = k;
  return best;
}

/** Runs the model over `features` (dropout off) and scores its predictions for the head's task. */
export function evaluateFeatures(
  engine: Engine,
  head: HeadSpec,
  features: readonly Feature[],
  labels: readonly string[],
  options: {
    B: number;
    T: number;
    ids: { cls: number; sep: number; pad: number };
    /** Multi-label decision threshold, one for all labels or one per label. @default 0.5 */
    threshold?: number | readonly number[];
    /** Called once per example scored (a windowed one once, whole). */
    onExample?: (outcome: ExampleOutcome) => void;
  },
): EvaluationResult {
  const { B } = options;
  const K = labels.length;
  if (head.numLabels !== undefined && head.numLabels !== K) {
    throw new InvalidArgument(`the model has ${head.numLabels} labels but the data's label set has ${K}`);
  }
  const thresholds = Array.from({ length: K }, (_, k) => {
    const t = options.threshold;
    return typeof t === "number" ? t : t?.[k] ?? 0.5;
  });
  const gold: number[] = [], pred: number[] = [];
  const goldMulti: Uint8Array[] = [], predMulti: Uint8Array[] = [];
  const goldTags: string[][] = [], predTags: string[][] = [];
  let loss = 0, lossCount = 0;
  /** One NER sentence: (n) labels, (n, K) logits, (n) CRF tags when the head has a CRF. */
  const scoreSentence = (
    tokenLabels: ArrayLike<number>,
    logits: Float32Array,
    paths: Int32Array | undefined,
    source: SourceRef,
  ) => {
    const predicted = new Int32Array(tokenLabels.length);
    for (let t = 0; t < tokenLabels.length; t++) {
      predicted[t] = paths ? paths[t]! : argmax(logits, t * K, K);
      const target = tokenLabels[t]!;
      if (!paths && target >= 0) {
        loss -= logSoftmaxAt(logits, t * K, K, target);
        lossCount++;
      }
    }
    const aligned = alignedTagSequences(tokenLabels, predicted, labels);
    goldTags.push(aligned.gold);
    predTags.push(aligned.predicted);
    options.onExample?.({ source, gold: aligned.gold, predicted: aligned.predicted });
  };
  /** One text example's (K) logits: thresholds or argmax, and the loss against its labels. */
  const scoreText = (f: TextFeature, logits: Float32Array) => {
    if (head.task === "multilabel") {
      const y = new Uint8Array(K);
      for (let k = 0; k < K; k++) {
        const z = logits[k]!;
        y[k] = 1 / (1 + Math.exp(-z)) >= thresholds[k]! ? 1 : 0;
        const t = f.multiLabel![k]!;
        // BCE with logits, in the numerically stable form.
        loss += Math.max(z, 0) - z * t + Math.log1p(Math.exp(-Math.abs(z)));
        lossCount++;
      }
      goldMulti.push(f.multiLabel!);
      predMulti.push(y);
      options.onExample?.({
        source: f.source,
        gold: labels.filter((_, k) => f.multiLabel![k] === 1),
        predicted: labels.filter((_, k) => y[k] === 1),
      });
      return;
    }
    const best = argmax(logits, 0, K);
    gold.push(f.label);
    pred.push(best);
    if (f.label >= 0) {
      loss -= logSoftmaxAt(logits, 0, K, f.label);
      lossCount++;
    }
    options.onExample?.({
      source: f.source,
      gold: f.label >= 0 ? [labels[f.label]!] : [],
      predicted: [labels[best]!],
      confidence: Math.exp(logSoftmaxAt(logits, 0, K, best)),
    });
  };
  const textWindows = new Map<number, { logits: Float32Array; seen: number }>();
  type Window = {
    span: TokenSpan;
    labels: Int32Array;
    logits: Float32Array;
    /** the emissions of the window's [CLS] and [SEP], which a CRF chain across windows starts and ends on */
    cls: Float32Array;
    sep: Float32Array;
  };
  // Read from the engine only when a CRF sentence ran as windows.
  let crf: CrfParams | undefined;
  const pending = new Map<number, Window[]>();
  // Longest first, so each batch pads only to rows of about its own length (the scores do not depend on order).
  const byLength = Array.from(features.keys()).sort((a, b) =>
    features[b]!.ids.length - features[a]!.ids.length
  );
  for (let start = 0; start < features.length; start += B) {
    const rows = byLength.slice(start, start + B).map((i) => features[i]!);
    const batch = makeBatch(rows, head, B, options.T, options.ids);
    const T = batch.T;
    const out = engine.forward(batch);
    rows.forEach((feature, b) => {
      if (head.task === "ner") {
        const f = feature as NerFeature;
        // The row's own tokens, between [CLS] and [SEP].
        const n = f.ids.length - 2;
        const first = b * T + 1;
        const tokenLabels = Int32Array.from(f.tokenLabels.slice(1, 1 + n));
        const logits = out.logits.slice(first * K, (first + n) * K);
        const paths = out.paths?.slice(first, first + n);
        if (!f.window) return scoreSentence(tokenLabels, logits, paths, f.source);
        const { example, start, end, count } = f.window;
        const windows = pending.get(example) ?? [];
        pending.set(example, windows);
        const cls = out.logits.slice((first - 1) * K, first * K);
        const sep = out.logits.slice((first + n) * K, (first + n + 1) * K);
        windows.push({ span: { start, end }, labels: tokenLabels, logits, cls, sep });
        if (windows.length < count) return;
        pending.delete(example);
        windows.sort((x, y) => x.span.start - y.span.start);
        const spans = windows.map((w) => w.span);
        const length = Math.max(...spans.map((s) => s.end));
        const emissions = stitchWindows(spans, windows.map((w) => w.logits), K, new Float32Array(length * K));
        if (paths) crf ??= crfParamsOf(engine.getWeights());
        scoreSentence(
          stitchWindows(spans, windows.map((w) => w.labels), 1, new Int32Array(length)),
          emissions,
          paths ? viterbiAcrossWindows(windows[0]!.cls, emissions, windows.at(-1)!.sep, K, crf!) : undefined,
          f.source,
        );
        return;
      }
      const f = feature as TextFeature;
      const logits = out.logits.slice(b * K, (b + 1) * K);
      if (!f.window) return scoreText(f, logits);
      // A windowed text: its prediction is the mean of its windows' logits, once all of them have run.
      const sums = textWindows.get(f.window.example) ?? { logits: new Float32Array(K), seen: 0 };
      textWindows.set(f.window.example, sums);
      for (let k = 0; k < K; k++) sums.logits[k]! += logits[k]!;
      if (++sums.seen < f.window.count) return;
      textWindows.delete(f.window.example);
      scoreText(f, sums.logits.map((z) => z / f.window!.count));
    });
  }
  const [stray] = pending;
  if (stray) {
    throw new RangeError(
      `Cannot score NER example ${stray[0]}: only ${stray[1].length} of its windows are among the features`,
    );
  }
  const [strayText] = textWindows;
  if (strayText) {
    throw new RangeError(
      `Cannot score example ${strayText[0]}: only ${strayText[1].seen} of its windows are among the features`,
    );
  }
  let report: ClassificationReport;
  if (head.task === "multilabel") {
    const s = multiLabelScores(goldMulti, predMulti);
    const perLabel: Record<string, number> = {};
    s.perLabel.forEach((x, k) => Object.assign(perLabel, prfEntries(labels[k]!, x)));
    report = {
      metrics: {
        accuracy: s.subsetAccuracy,
        precision: s.micro.precision,
        recall: s.micro.recall,
        f1: s.micro.f1,
        micro_f1: s.micro.f1,
        macro_f1: s.macro.f1,
      },
      perLabel,
    };
  } else if (head.task === "ner") {
    const s = entityScores(goldTags, predTags);
    const perLabel: Record<string, number> = {};
    let macro = 0;
    for (const [type, x] of Object.entries(s.perType)) {
      Object.assign(perLabel, prfEntries(type, x));
      macro += x.f1;
    }
    let tokens = 0, right = 0;
    goldTags.forEach((g, i) => g.forEach((tag, t) => (tokens++, tag === predTags[i]![t] && right++)));
    report = {
      metrics: {
        precision: s.precision,
        recall: s.recall,
        f1: s.f1,
        micro_f1: s.f1,
        macro_f1: Object.keys(s.perType).length ? macro / Object.keys(s.perType).length : 0,
        accuracy: tokens ? right / tokens : 0,
      },
      perLabel,
    };
  } else {
    report = classificationMetrics(gold, pred, [...labels]);
  }
  if (lossCount) report.metrics.loss = loss / lossCount;
  return {
    ...report,
    examples: head.task === "ner"
      ? goldTags.length
      : head.task === "multilabel"
      ? goldMulti.length
      : gold.length,
  };
}

function prfEntries(name: string, x: { precision: number; recall: number; f1: number; support: number }) {
  return {
    [`${name}/precision`]: x.precision,
    [`${name}/recall`]: x.recall,
    [`${name}/f1`]: x.f1,
    [`${name}/support`]: x.support,
  };
}

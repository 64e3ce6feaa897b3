/**
 * Evaluation metrics: entity-level precision/recall/F1 exactly as seqeval computes them in its default
 * (conlleval-compatible) mode, accuracy, and micro/macro F1 for multi-label classification.
 *
 * @module
 */

/** One entity: type and inclusive [start, end] positions in the (flattened) sequence. */
export type Entity = [type: string, start: number, end: number];

function tagAndType(chunk: string): [string, string] {
  // seqeval: tag = chunk[0], type = chunk[1:].split('-', maxsplit=1)[-1] or '_'
  const tag = chunk[0] ?? "O";
  const rest = chunk.slice(1);
  const dash = rest.indexOf("-");
  const type = (dash >= 0 ? rest.slice(dash + 1) : rest) || "_";
  return [tag, type];
}

function endOfChunk(prevTag: string, tag: string, prevType: string, type: string): boolean {
  if (prevTag === "E" || prevTag === "S") return true;
  if ((prevTag === "B" || prevTag === "I") && (tag === "B" || tag === "S" || tag === "O")) return true;
  return prevTag !== "O" && prevTag !== "." && prevType !== type;
}

function startOfChunk(prevTag: string, tag: string, prevType: string, type: string): boolean {
  if (tag === "B" || tag === "S") return true;
  if ((prevTag === "E" || prevTag === "S" || prevTag === "O") && (tag === "E" || tag === "I")) return true;
  return tag !== "O" && tag !== "." && prevType !== type;
}

/**
 * Entities of a tag sequence (seqeval `get_entities`): an `I-` after `O` or after another type opens
 * an entity, as conlleval does. Several sentences are joined with an `O` between them.
 */
export function getEntities(seq: readonly string[] | readonly (readonly string[])[]): Entity[] {
  const flat: string[] = seq.length > 0 && Array.isArray(seq[0])
    ? (seq as string[][]).flatMap((sentence) => [...sentence, "O"])
    : [...(seq as string[])];
  let prevTag = "O";
  let prevType = "";
  let begin = 0;
  const chunks: Entity[] = [];
  flat.push("O");
  flat.forEach((chunk, i) => {
    const [tag, type] = tagAndType(chunk);
    if (endOfChunk(prevTag, tag, prevType, type)) chunks.push([prevType, begin, i - 1]);
    if (startOfChunk(prevTag, tag, prevType, type)) begin = i;
    prevTag = tag;
    prevType = type;
  });
  return chunks;
}

export interface Prf {
  precision: number;
  recall: number;
  f1: number;
  /** Gold items (entities, or positive labels). */
  support: number;
}

function prf(correct: number, predicted: number, gold: number): Prf {
  const precision = predicted > 0 ? correct / predicted : 0;
  const recall = gold > 0 ? correct / gold : 0;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { precision, recall, f1, support: gold };
}

export interface EntityScores extends Prf {
  /** Per entity type, sorted by type. */
  perType: Record<string, Prf>;
}

/** seqeval `precision_score`/`recall_score`/`f1_score` (micro average) and its per-type report. */
export function entityScores(gold: readonly string[][], predicted: readonly string[][]): EntityScores {
  if (gold.length !== predicted.length) {
    throw new RangeError(
      `gold and predicted must hold as many sentences: ${gold.length} vs ${predicted.length}`,
    );
  }
  gold.forEach((sentence, i) => {
    if (sentence.length !== predicted[i]!.length) {
      throw new RangeError(
        `sentence ${i}: gold has ${sentence.length} tags, predicted ${predicted[i]!.length}`,
      );
    }
  });
  const key = ([type, start, end]: Entity) => `${type}\u0000${start}\u0000${end}`;
  const goldEntities = getEntities(gold);
  const predEntities = getEntities(predicted);
  const goldKeys = new Set(goldEntities.map(key));
  const types = [...new Set([...goldEntities, ...predEntities].map(([type]) => type))].sort();
  const perType: Record<string, Prf> = {};
  for (const type of types) {
    const g = goldEntities.filter((e) => e[0] === type);
    const p = predEntities.filter((e) => e[0] === type);
    perType[type] = prf(p.filter((e) => goldKeys.has(key(e))).length, p.length, g.length);
  }
  const correct = predEntities.filter((e) => goldKeys.has(key(e))).length;
  return { ...prf(correct, predEntities.length, goldEntities.length), perType };
}

/** Fraction of equal items. */
export function accuracy(gold: ArrayLike<number | string>, predicted: ArrayLike<number | string>): number {
  if (gold.length !== predicted.length) {
    throw new RangeError(`gold and predicted must be as long: ${gold.length} vs ${predicted.length}`);
  }
  if (gold.length === 0) return 0;
  let equal = 0;
  for (let i = 0; i < gold.length; i++) if (gold[i] === predicted[i]) equal++;
  return equal / gold.length;
}

export interface MultiLabelScores {
  micro: Prf;
  /** Unweighted mean over labels (a label never gold nor predicted scores 0, as scikit-learn's default). */
  macro: { precision: number; recall: number; f1: number };
  perLabel: Prf[];
  /** Examples whose predicted label set equals the gold one exactly. */
  subsetAccuracy: number;
}

/** Micro and macro precision/recall/F1 over (N, K) 0/1 matrices given as rows. */
export function multiLabelScores(
  gold: readonly ArrayLike<number>[],
  predicted: readonly ArrayLike<number>[],
): MultiLabelScores {
  if (gold.length !== predicted.length) {
    throw new RangeError(`gold and predicted must hold as many rows: ${gold.length} vs ${predicted.length}`);
  }
  const K = gold[0]?.length ?? 0;
  const tp = new Array<number>(K).fill(0),
    fp = new Array<number>(K).fill(0),
    fn = new Array<number>(K).fill(0);
  let exact = 0;
  gold.forEach((row, n) => {
    const pred = predicted[n]!;
    if (row.length !== K || pred.length !== K) throw new RangeError(`row ${n} must have ${K} labels`);
    let same = true;
    for (let k = 0; k < K; k++) {
      const g = row[k]! > 0, p = pred[k]! > 0;
      if (g && p) tp[k]!++;
      else if (p) fp[k]!++;
      else if (g) fn[k]!++;
      if (g !== p) same = false;
    }
    if (same) exact++;
  });
  const perLabel = tp.map((t, k) => prf(t, t + fp[k]!, t + fn[k]!));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const mean = (pick: (x: Prf) => number) => (K > 0 ? sum(perLabel.map(pick)) / K : 0);
  return {
    micro: prf(sum(tp), sum(tp) + sum(fp), sum(tp) + sum(fn)),
    macro: { precision: mean((x) => x.precision), recall: mean((x) => x.recall), f1: mean((x) => x.f1) },
    perLabel,
    subsetAccuracy: gold.length > 0 ? exact / gold.length : 0,
  };
}

/**
 * Gold and predicted tag sequences of aligned NER features: the positions whose gold label is not -100
 * (first pieces of words), as Hugging Face token classification evaluates.
 */
export function alignedTagSequences(
  tokenLabels: ArrayLike<number>,
  predictions: ArrayLike<number>,
  labels: readonly string[],
): { gold: string[]; predicted: string[] } {
  const gold: string[] = [];
  const predicted: string[] = [];
  for (let t = 0; t < tokenLabels.length; t++) {
    const g = tokenLabels[t]!;
    if (g < 0) continue;
    gold.push(labels[g]!);
    predicted.push(labels[predictions[t]!] ?? "O");
  }
  return { gold, predicted };
}

/**
 * The floor every BERT NER result is reported against: a per-character maximum-entropy Markov tagger
 * (MEMM). Each character is classified by multinomial logistic regression (AdaGrad) over hashed features
 * of a window around it (the characters at offsets -2..+2, the bigrams (-2,-1), (-1,0), (0,+1), (+1,+2),
 * the pair (-1,+1), the character classes at -1..+1) and of the previous tag, alone and with the
 * character. Training conditions on the gold previous tag; prediction decodes greedily left to right,
 * conditioning on its own previous answer. The output is repaired to valid BIO the way seqeval's default mode reads it anyway
 * (an `I-X` not after `B-X`/`I-X` becomes `B-X`), so the entities it scores are unchanged.
 *
 * The counterpart of the sentiment baseline in linear.ts: deterministic for a seed, no dependencies.
 *
 * @module
 */
import { hashString, mulberry32, shuffleInPlace, softmaxInPlace } from "./linear.ts";

export interface LinearTaggerOptions {
  /** Hashed feature space; 2^20 keeps collisions rare for the ~10^6 window features of a corpus. */
  buckets?: number;
  epochs?: number;
  learningRate?: number;
  /** L2 penalty per update, small: the features are sparse indicators. */
  l2?: number;
  seed?: number;
}

export interface LinearTagger {
  /** The tags seen in training, sorted. */
  labels: string[];
  /** One tag per character, valid BIO (see the module note). */
  predict(chars: string[]): string[];
}

/** Outside the sentence, so the edges get features of their own. */
const PAD_LEFT = "\u0002";
const PAD_RIGHT = "\u0003";
/** The previous tag of the first character. */
const START_TAG = "<s>";

/** A coarse class of a character (its first code point): digit, Chinese numeral, Latin letter, CJK, punctuation, other. */
export function charClass(char: string): string {
  if (char === PAD_LEFT || char === PAD_RIGHT) return char;
  const c = char.codePointAt(0) ?? 0;
  if ((c >= 0x30 && c <= 0x39) || (c >= 0xff10 && c <= 0xff19)) return "d";
  if (/^[〇一二三四五六七八九十百千万亿零两]$/u.test(char)) return "n";
  if (
    (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0xff21 && c <= 0xff3a) ||
    (c >= 0xff41 && c <= 0xff5a)
  ) return "l";
  if ((c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x20000 && c <= 0x2ffff)) {
    return "h";
  }
  if (/^[\p{P}\p{S}]/u.test(char)) return "p";
  return "o";
}

/** The window features of position `i` that do not depend on tags, as template-prefixed strings. */
function windowFeatures(chars: readonly string[], classes: readonly string[], i: number): string[] {
  const at = (o: number) => chars[i + o] ?? (i + o < 0 ? PAD_LEFT : PAD_RIGHT);
  const cls = (o: number) => classes[i + o] ?? (i + o < 0 ? PAD_LEFT : PAD_RIGHT);
  const [m2, m1, c0, p1, p2] = [at(-2), at(-1), at(0), at(1), at(2)];
  return [
    "c0\u0001" + c0,
    "c-1\u0001" + m1,
    "c+1\u0001" + p1,
    "c-2\u0001" + m2,
    "c+2\u0001" + p2,
    "b-1\u0001" + m1 + "\u0001" + c0,
    "b+1\u0001" + c0 + "\u0001" + p1,
    "b-2\u0001" + m2 + "\u0001" + m1,
    "b+2\u0001" + p1 + "\u0001" + p2,
    "s\u0001" + m1 + "\u0001" + p1,
    "k\u0001" + cls(-1) + cls(0) + cls(1),
  ];
}

/** The features of the previous tag: alone, and with the character it precedes. */
function tagFeatures(chars: readonly string[], i: number, prevTag: string): string[] {
  return ["t\u0001" + prevTag, "tc\u0001" + prevTag + "\u0001" + chars[i]!];
}

/** seqeval's reading of a tag sequence as BIO: an `I-X` that does not continue an `X` entity opens one. */
export function repairBio(tags: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < tags.length; i++) {
    const tag = tags[i]!;
    if (tag.startsWith("I-")) {
      const prev = out[i - 1] ?? "O";
      const type = tag.slice(2);
      if (prev !== "B-" + type && prev !== "I-" + type) {
        out.push("B-" + type);
        continue;
      }
    }
    out.push(tag);
  }
  return out;
}

export function trainLinearTagger(
  sentences: { chars: string[]; tags: string[] }[],
  options: LinearTaggerOptions = {},
): LinearTagger {
  const buckets = options.buckets ?? 1 << 20;
  const epochs = options.epochs ?? 6;
  const lr = options.learningRate ?? 0.1;
  const l2 = options.l2 ?? 1e-6;
  sentences.forEach((s, i) => {
    if (s.chars.length !== s.tags.length) {
      throw new RangeError(`sentence ${i}: ${s.chars.length} characters but ${s.tags.length} tags`);
    }
  });
  const nonEmpty = sentences.filter((s) => s.chars.length > 0);
  if (nonEmpty.length === 0) throw new RangeError("Cannot train the linear tagger: no tagged characters");
  const labels = [...new Set(nonEmpty.flatMap((s) => s.tags))].sort();
  const K = labels.length;
  const labelIndex = new Map(labels.map((l, i) => [l, i]));
  const weights = new Float32Array(buckets * K);
  const bias = new Float32Array(K);
  const gradSq = new Float32Array(buckets * K).fill(1e-8);

  const hashAll = (chars: readonly string[], classes: readonly string[], i: number, prevTag: string) =>
    [...windowFeatures(chars, classes, i), ...tagFeatures(chars, i, prevTag)].map((f) =>
      hashString(f) % buckets
    );

  // Every position's features, gold previous tag included, hashed once: F indices per position.
  const F = windowFeatures(["x"], ["h"], 0).length + tagFeatures(["x"], 0, "O").length;
  const featurised = nonEmpty.map(({ chars, tags }) => {
    const classes = chars.map(charClass);
    const x = new Int32Array(chars.length * F);
    for (let i = 0; i < chars.length; i++) x.set(hashAll(chars, classes, i, tags[i - 1] ?? START_TAG), i * F);
    return { x, y: Int32Array.from(tags, (t) => labelIndex.get(t)!) };
  });

  const scores = new Float64Array(K);
  /** Softmax over the labels for the F features at `x[offset..]`, into `scores`. */
  const score = (x: ArrayLike<number>, offset: number) => {
    for (let k = 0; k < K; k++) scores[k] = bias[k]!;
    for (let j = 0; j < F; j++) {
      const base = x[offset + j]! * K;
      for (let k = 0; k < K; k++) scores[k]! += weights[base + k]!;
    }
    return softmaxInPlace(scores);
  };

  const order = featurised.map((_, i) => i);
  const random = mulberry32(options.seed ?? 42);
  for (let epoch = 0; epoch < epochs; epoch++) {
    shuffleInPlace(order, random);
    for (const s of order) {
      const { x, y } = featurised[s]!;
      for (let i = 0; i < y.length; i++) {
        const p = score(x, i * F);
        for (let k = 0; k < K; k++) {
          const g = p[k]! - (k === y[i] ? 1 : 0);
          bias[k]! -= 0.1 * lr * g;
          for (let j = 0; j < F; j++) {
            const w = x[i * F + j]! * K + k;
            const grad = g + l2 * weights[w]!;
            gradSq[w]! += grad * grad;
            weights[w]! -= (lr * grad) / Math.sqrt(gradSq[w]!);
          }
        }
      }
    }
  }

  return {
    labels,
    predict(chars: string[]) {
      const classes = chars.map(charClass);
      const tags: string[] = [];
      for (let i = 0; i < chars.length; i++) {
        const p = score(hashAll(chars, classes, i, tags[i - 1] ?? START_TAG), 0);
        let best = 0;
        for (let k = 1; k < K; k++) if (p[k]! > p[best]!) best = k;
        tags.push(labels[best]!);
      }
      // The next position conditioned on the raw tag, one of the training labels; repaired once decoded.
      return repairBio(tags);
    },
  };
}

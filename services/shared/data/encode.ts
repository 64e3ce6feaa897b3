/**
 * Labelled examples → token ids the engine trains on, with a report of everything that did not fit.
 *
 * Text tasks go through the tokenizer's `encode` (`[CLS] A [SEP] (B [SEP])`, `longest_first` truncation
 * to `maxLength`). NER aligns character-level tags to tokens: the units (characters of the text) are
 * joined back into the text, the basic tokenizer + WordPiece split it, and each word takes the tag of
 * its first character on its first piece; the other pieces get -100 (ignored by the loss). A Chinese
 * character is a word of its own, so it keeps its tag; a Latin word or a number spread over several
 * tagged characters is one word whose first piece carries the tag of its first character. A NER example
 * longer than `maxLength` is never cut: it becomes overlapping windows (windows.ts), each a feature of its own
 * with its own [CLS]/[SEP] and labels, so every token is trained on and every entity is scored.
 *
 * @module
 */
import type { WordPieceTokenizer } from "../wordpiece/mod.ts";
import type { DataTask, NerExample, SourceRef, TextExample } from "./formats.ts";
import type { LabelSet } from "./labels.ts";
import { getEntities } from "./metrics.ts";
import { type TokenSpan, tokenWindows, windowPass } from "./windows.ts";

/** Ignore index of the losses: special tokens, continuation pieces and padding. */
export const IGNORE_INDEX = -100;

/** What the tokenizer has to offer for encoding (WordPieceTokenizer satisfies it). */
export type DataTokenizer = Pick<
  WordPieceTokenizer,
  "encode" | "tokenizeWords" | "clsId" | "sepId" | "padId"
>;

export interface TextFeature {
  ids: number[];
  typeIds: number[];
  /** classify/pair: class index. */
  label: number;
  /** multilabel: one 0/1 per class. */
  multiLabel?: Uint8Array;
  source: SourceRef;
  /** Set on each window of a text read as windows (encodeTextExamples with `windows`). */
  window?: FeatureWindow;
}

export interface NerFeature {
  ids: number[];
  /** Tag index on the first piece of each word, -100 on specials and continuation pieces. */
  tokenLabels: number[];
  source: SourceRef;
  /** Set on each window of an example longer than maxLength (encodeNerExamples). */
  window?: FeatureWindow;
}

/**
 * Which example a window (of a NER sentence or a windowed text) comes from (its index among those encoded),
 * its tokens, and how many windows it has.
 */
export interface FeatureWindow extends TokenSpan {
  example: number;
  count: number;
}

/** What encoding changed: nothing is dropped without being counted here. */
export interface EncodeReport {
  examples: number;
  maxLength: number;
  /** Examples that lost tokens to `maxLength` (text tasks read whole; windowed examples lose none, so 0). */
  truncated: number;
  /** Tokens cut off over all examples. */
  tokensTruncated: number;
  /** NER: entities in the data, and those that no longer appear among the aligned token tags (starting inside a word, or on characters the tokenizer drops). */
  entities?: number;
  entitiesLost?: number;
  /** NER and windowed text: examples longer than `maxLength`, encoded as several overlapping windows. */
  windowed?: number;
  /** NER and windowed text: features produced, one per window (`examples` when none is windowed). */
  windows?: number;
  /** Where the first few truncations/losses happened, as `file:line`. */
  samples: string[];
}

const MAX_SAMPLES = 10;

function note(report: EncodeReport, source: SourceRef): void {
  if (report.samples.length < MAX_SAMPLES) report.samples.push(`${source.file}:${source.line}`);
}

/**
 * Text examples → features of at most `maxLength` tokens. A longer one is cut (`longest_first`) and counted in
 * the report, unless `windows` is set (classify and multilabel): then it becomes overlapping windows of
 * `maxLength - 2` tokens (windows.ts), each `[CLS] window [SEP]` with the example's label, whose logits
 * evaluation and serving average into the example's prediction, so a long review is read to its end.
 */
export function encodeTextExamples(
  examples: readonly TextExample[],
  tokenizer: DataTokenizer,
  labels: LabelSet,
  options: { task: Exclude<DataTask, "ner">; maxLength: number; windows?: boolean },
): { features: TextFeature[]; report: EncodeReport } {
  const { task, maxLength } = options;
  if (options.windows && task === "pair") {
    throw new RangeError(
      "Cannot encode pair examples as windows: only classify and multilabel texts are windowed",
    );
  }
  const report: EncodeReport = {
    examples: examples.length,
    maxLength,
    truncated: 0,
    tokensTruncated: 0,
    ...(options.windows ? { windowed: 0, windows: 0 } : {}),
    samples: [],
  };
  const features: TextFeature[] = [];
  examples.forEach((example, e) => {
    const pair = task === "pair" ? example.textB : undefined;
    const full = tokenizer.encode(example.text, pair);
    let encodings: Array<{ ids: number[]; typeIds: number[]; window?: FeatureWindow }>;
    if (full.ids.length <= maxLength) encodings = [full];
    else if (options.windows) {
      // The tokens between [CLS] and [SEP], windowed as NER sentences are.
      const inner = full.ids.slice(1, -1);
      const spans = tokenWindows(inner.length, maxLength - 2);
      report.windowed!++;
      encodings = spans.map((span) => ({
        ...windowPass(inner, span, tokenizer.clsId, tokenizer.sepId),
        window: { example: e, start: span.start, end: span.end, count: spans.length },
      }));
    } else {
      const cut = tokenizer.encode(example.text, pair, { maxLength });
      report.truncated++;
      report.tokensTruncated += full.ids.length - cut.ids.length;
      note(report, example.source);
      encodings = [cut];
    }
    if (options.windows) report.windows! += encodings.length;
    let multiLabel: Uint8Array | undefined;
    let label = -1;
    if (task === "multilabel") {
      multiLabel = new Uint8Array(labels.size);
      for (const name of example.labels) multiLabel[labels.index(name, example.source)] = 1;
    } else {
      label = labels.index(example.labels[0]!, example.source);
    }
    for (const encoding of encodings) {
      const feature: TextFeature = {
        ids: encoding.ids,
        typeIds: encoding.typeIds,
        label,
        source: example.source,
      };
      if (multiLabel) feature.multiLabel = multiLabel;
      if (encoding.window) feature.window = encoding.window;
      features.push(feature);
    }
  });
  return { features, report };
}

/** Code point ranges of each unit in the text the units join into. */
function joinUnits(units: readonly string[]): { text: string; unitOfCodePoint: Int32Array } {
  // Character-level files join without separators; word-level ones (CoNLL) need spaces between words.
  const wordLevel = units.some((unit) => [...unit].length > 1);
  const separator = wordLevel ? " " : "";
  const text = units.join(separator);
  const unitOfCodePoint = new Int32Array([...text].length).fill(-1);
  let at = 0;
  units.forEach((unit, u) => {
    const length = [...unit].length;
    unitOfCodePoint.fill(u, at, at + length);
    at += length + separator.length;
  });
  return { text, unitOfCodePoint };
}

/**
 * NER examples → features of at most `maxLength` tokens. An example over `maxLength - 2` tokens becomes
 * windows of that many tokens overlapping by `stride` (default: a quarter of them, see windows.ts); each
 * window's labels are the example's labels over its tokens, so a token in an overlap is trained in both.
 */
export function encodeNerExamples(
  examples: readonly NerExample[],
  tokenizer: DataTokenizer,
  labels: LabelSet,
  options: { maxLength: number; stride?: number },
): { features: NerFeature[]; report: EncodeReport } {
  const { maxLength } = options;
  const report: EncodeReport = {
    examples: examples.length,
    maxLength,
    truncated: 0,
    tokensTruncated: 0,
    entities: 0,
    entitiesLost: 0,
    windowed: 0,
    windows: 0,
    samples: [],
  };
  const budget = maxLength - 2; // [CLS] and [SEP]
  if (!Number.isInteger(budget) || budget < 1) {
    throw new RangeError(
      `Cannot encode NER examples as 'maxLength' must leave room for a token besides [CLS] and [SEP]: current value is ${maxLength}`,
    );
  }
  const features: NerFeature[] = [];
  examples.forEach((example, e) => {
    const tagIds = example.tags.map((tag) => labels.index(tag, example.source));
    const { text, unitOfCodePoint } = joinUnits(example.units);
    const ids: number[] = [];
    const tokenLabels: number[] = [];
    const alignedTags: string[] = [];
    for (const word of tokenizer.tokenizeWords(text)) {
      const unit = unitOfCodePoint[word.start] ?? -1;
      word.ids.forEach((id, piece) => {
        ids.push(id);
        const label = piece === 0 && unit >= 0 ? tagIds[unit]! : IGNORE_INDEX;
        tokenLabels.push(label);
        if (label !== IGNORE_INDEX) alignedTags.push(labels.labels[label]!);
      });
    }
    const gold = getEntities(example.tags).length;
    const aligned = getEntities(alignedTags).length;
    report.entities! += gold;
    if (aligned < gold) {
      report.entitiesLost! += gold - aligned;
      note(report, example.source);
    }
    const windows = tokenWindows(ids.length, budget, options.stride);
    if (windows.length > 1) report.windowed!++;
    report.windows! += windows.length;
    for (const span of windows) {
      const { start, end } = span;
      const feature: NerFeature = {
        ids: windowPass(ids, span, tokenizer.clsId, tokenizer.sepId).ids,
        tokenLabels: [IGNORE_INDEX, ...tokenLabels.slice(start, end), IGNORE_INDEX],
        source: example.source,
      };
      if (windows.length > 1) feature.window = { example: e, start, end, count: windows.length };
      features.push(feature);
    }
  });
  return { features, report };
}

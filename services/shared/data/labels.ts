/**
 * Label sets in a stable order, so the same data always gives the same `id2label`: single-label and
 * multi-label classes sorted (numerically when every label is an integer, so "2" < "10"), NER tags as
 * `O` then `B-`/`I-` (and `E-`/`S-` when the data uses them) per entity type in sorted type order.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import type { NerExample, SourceRef, TextExample } from "./formats.ts";

export class LabelSet {
  readonly #index: Map<string, number>;

  constructor(readonly labels: readonly string[]) {
    if (labels.length === 0) throw new InvalidArgument("labels must not be empty");
    this.#index = new Map(labels.map((label, i) => [label, i]));
    if (this.#index.size !== labels.length) {
      throw new InvalidArgument(`labels must be distinct: got ${JSON.stringify(labels)}`);
    }
  }

  get size(): number {
    return this.labels.length;
  }

  has(label: string): boolean {
    return this.#index.has(label);
  }

  /** The index of `label`; an unknown label is an InvalidArgument naming where it was read. */
  index(label: string, source?: SourceRef): number {
    const index = this.#index.get(label);
    if (index === undefined) {
      const where = source ? `${source.file}:${source.line}: ` : "";
      throw new InvalidArgument(
        `${where}label ${JSON.stringify(label)} is not one of the ${this.size} known labels ${
          JSON.stringify(this.labels.slice(0, 20))
        }`,
      );
    }
    return index;
  }

  /** `id2label` as Hugging Face config.json spells it (string keys). */
  id2label(): Record<string, string> {
    return Object.fromEntries(this.labels.map((label, i) => [String(i), label]));
  }

  label2id(): Record<string, number> {
    return Object.fromEntries(this.labels.map((label, i) => [label, i]));
  }

  /** The label set of a config.json `id2label` (ids must be 0..K-1). */
  static fromId2Label(id2label: Record<string, string>): LabelSet {
    const entries = Object.entries(id2label).map(([id, label]) => [Number(id), label] as const);
    entries.sort((a, b) => a[0] - b[0]);
    entries.forEach(([id], i) => {
      if (id !== i) throw new InvalidArgument(`id2label ids must be 0..${entries.length - 1}: missing ${i}`);
    });
    return new LabelSet(entries.map(([, label]) => label));
  }

  /** Classes of classify/pair/multilabel examples. */
  static ofTextExamples(examples: readonly TextExample[]): LabelSet {
    const seen = new Set<string>();
    for (const example of examples) for (const label of example.labels) seen.add(label);
    if (seen.size === 0) throw new InvalidArgument("the data holds no labels");
    return new LabelSet(sortLabels([...seen]));
  }

  /** Tags of NER examples: O, then per type B-, I- (E-, S- when used). */
  static ofNerExamples(examples: readonly NerExample[]): LabelSet {
    const types = new Set<string>();
    const prefixes = new Set<string>(["B", "I"]);
    for (const example of examples) {
      for (const tag of example.tags) {
        if (tag === "O") continue;
        prefixes.add(tag[0]!);
        types.add(tag.slice(2));
      }
    }
    const order = ["B", "I", "E", "S"].filter((p) => prefixes.has(p));
    return new LabelSet(["O", ...[...types].sort().flatMap((type) => order.map((p) => `${p}-${type}`))]);
  }
}

function sortLabels(labels: string[]): string[] {
  if (labels.every((label) => /^-?\d+$/.test(label))) return labels.sort((a, b) => Number(a) - Number(b));
  return labels.sort();
}

/**
 * Labelled data sets in the store, `datasets/<name>/`: the uploaded file(s) as they came, published with a
 * manifest (store/publish.ts) whose metadata records the format, example count, labels and content hash.
 * Parsing goes through services/shared/data, so a malformed line is refused at upload naming file and line.
 */
import { InvalidArgument, NotFound } from "../shared/errors.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { type Manifest, publish, readManifest } from "../shared/store/publish.ts";
import {
  type DataTask,
  guessFormat,
  type LabelledFormat,
  type NerExample,
  parseNerExamples,
  parseTextExamples,
  type TextExample,
} from "../shared/data/formats.ts";
import { validateName } from "../shared/model/registry.ts";

export const DATASETS_PREFIX = "datasets/";

export interface DatasetInfo {
  name: string;
  format: LabelledFormat;
  examples: number;
  labels: string[];
  sha256: string;
}

const FORMATS: LabelledFormat[] = ["csv", "jsonl", "bio", "cluener"];

/** The format of a file: named explicitly, or guessed from its name (NER formats for BIO/CLUENER). */
export function formatOf(file: string, explicit?: string): LabelledFormat {
  if (explicit) {
    if (!FORMATS.includes(explicit as LabelledFormat)) {
      throw new InvalidArgument(
        `format must be one of ${FORMATS.join(", ")}: got ${JSON.stringify(explicit)}`,
      );
    }
    return explicit as LabelledFormat;
  }
  const lower = file.toLowerCase();
  if (lower.endsWith(".csv")) return "csv";
  if (/\.(bio|conll|bmes|txt|tsv)$/.test(lower)) return "bio";
  if (lower.endsWith(".jsonl") || lower.endsWith(".json")) return "jsonl";
  return guessFormat(file, "classify");
}

function isNerFormat(format: LabelledFormat): boolean {
  return format === "bio" || format === "cluener";
}

/** Parses a data file's text, for the task when known; JSONL with a label object is read as CLUENER. */
export function parseDataset(
  text: string,
  file: string,
  format: LabelledFormat,
  task?: DataTask,
): { task: DataTask; examples: TextExample[] | NerExample[] } {
  if (format === "jsonl" && (task === "ner" || (!task && /"label"\s*:\s*\{/.test(text.slice(0, 4096))))) {
    format = "cluener";
  }
  if (isNerFormat(format)) {
    if (task && task !== "ner") {
      throw new InvalidArgument(`${file}: ${format} data holds tags, usable for task ner only (not ${task})`);
    }
    return { task: "ner", examples: parseNerExamples(text, { file, format }) };
  }
  if (task === "ner") throw new InvalidArgument(`${file}: task ner needs BIO or CLUENER data, got ${format}`);
  if (task) return { task, examples: parseTextExamples(text, { file, format, task }) };
  // Unknown task (an upload): the data says which; the readers' messages name what they found.
  let inferred: DataTask = "classify";
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const examples = parseTextExamples(text, { file, format, task: inferred });
      if (inferred === "classify" && examples.some((e) => e.labels.some((l) => l.includes("|")))) {
        inferred = "multilabel";
        continue;
      }
      return { task: inferred, examples };
    } catch (error) {
      const message = (error as Error).message;
      if (inferred === "classify" && /use task pair/.test(message)) inferred = "pair";
      else if (inferred !== "multilabel" && /multilabel|label is empty/.test(message)) {
        inferred = "multilabel";
      } else throw error;
    }
  }
  return { task: inferred, examples: parseTextExamples(text, { file, format, task: inferred }) };
}

/** Checks and stores one data file as data set `name`. */
export async function storeDataset(
  store: ObjectStore,
  options: {
    name: string;
    file: string;
    bytes: Uint8Array;
    format?: string;
    overwrite?: boolean;
    description?: string;
  },
): Promise<DatasetInfo> {
  validateName(options.name, "header.name");
  const format = formatOf(options.file, options.format);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(options.bytes);
  } catch {
    throw new InvalidArgument(`${options.file}: not valid UTF-8`);
  }
  const parsed = parseDataset(text, options.file, format);
  if (parsed.examples.length === 0) throw new InvalidArgument(`${options.file}: holds no examples`);
  const labels = new Set<string>();
  for (const e of parsed.examples) {
    if ("tags" in e) { for (const t of e.tags) t !== "O" && labels.add(t.slice(2)); }
    else for (const l of e.labels) labels.add(l);
  }
  const fileName = options.file.split("/").pop()!.replace(/[^A-Za-z0-9_.-]/g, "_") || `data.${format}`;
  const manifest = await publish(store, `${DATASETS_PREFIX}${options.name}`, { [fileName]: options.bytes }, {
    overwrite: options.overwrite ?? false,
    metadata: {
      kind: "dataset",
      format: parsed.task === "ner" && format === "jsonl" ? "cluener" : format,
      examples: parsed.examples.length,
      labels: [...labels].sort(),
      ...(options.description ? { description: options.description } : {}),
    },
  });
  return infoOf(options.name, manifest);
}

function infoOf(name: string, manifest: Manifest): DatasetInfo {
  const meta = manifest.metadata as { format?: LabelledFormat; examples?: number; labels?: string[] };
  return {
    name,
    format: meta.format ?? "csv",
    examples: meta.examples ?? 0,
    labels: meta.labels ?? [],
    sha256: manifest.parts.map((p) => p.sha256).join("+"),
  };
}

/** Every example of data set `name` for `task`; NotFound naming the field when there is no such set. */
export async function readDataset(
  store: ObjectStore,
  name: string,
  task: DataTask,
  field = "dataset",
): Promise<{ info: DatasetInfo; examples: TextExample[] | NerExample[] }> {
  validateName(name, field);
  let manifest: Manifest;
  try {
    manifest = await readManifest(store, `${DATASETS_PREFIX}${name}`);
  } catch (error) {
    if (error instanceof NotFound) throw new NotFound(`${field}: no data set named ${name} in the store`);
    throw error;
  }
  const info = infoOf(name, manifest);
  const all: Array<TextExample | NerExample> = [];
  for (const part of manifest.parts) {
    const text = await store.getText(`${manifest.prefix}/${part.name}`);
    const { examples } = parseDataset(text, `${name}/${part.name}`, info.format, task);
    all.push(...examples);
  }
  return { info, examples: all as TextExample[] | NerExample[] };
}

/**
 * What data set `name`'s manifest says (format, examples, labels) and its size in bytes, without reading the data:
 * SubmitJob checks a job's task and labels against it. NotFound naming `field` when there is no such set.
 */
export async function datasetInfo(
  store: ObjectStore,
  name: string,
  field = "dataset",
): Promise<DatasetInfo & { bytes: number }> {
  validateName(name, field);
  const manifest = await readManifest(store, `${DATASETS_PREFIX}${name}`).catch((error) => {
    if (error instanceof NotFound) throw new NotFound(`${field}: no data set named ${name} in the store`);
    throw error;
  });
  return { ...infoOf(name, manifest), bytes: manifest.parts.reduce((sum, part) => sum + part.size, 0) };
}

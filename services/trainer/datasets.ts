/**
 * Labelled data sets in the store, `datasets/<name>/`: the uploaded file(s) as they came, published with a
 * manifest (store/publish.ts) whose metadata records the format, example count, labels and content hash.
 * Parsing goes through services/shared/data, so a malformed line is refused at upload naming file and line.
 */
import { AlreadyExists, InvalidArgument, NotFound } from "../shared/errors.ts";
import type { ObjectStore } from "../shared/store/store.ts";
import { isPublished, type Manifest, publish, readManifest } from "../shared/store/publish.ts";
import {
  type DataTask,
  guessFormat,
  type LabelledFormat,
  type LineParser,
  type NerExample,
  nerExampleParser,
  parseStream,
  type TextExample,
  textExampleParser,
} from "../shared/data/formats.ts";
import { validateName } from "../shared/model/registry.ts";

export const DATASETS_PREFIX = "datasets/";
/** Where an upload waits while it is checked; deleted whatever the outcome. */
const STAGING_PREFIX = "uploads/";

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

/** Opens a data file's bytes afresh (a stored object is read once per pass). */
type Open = () => Promise<ReadableStream<Uint8Array>>;

/**
 * Calls `visit` with every example of a data file, read as a stream line by line, so a file of millions of
 * rows costs the examples kept by the caller and no more. JSONL whose first lines carry a label object is
 * read as CLUENER.
 */
async function forEachExample(
  open: Open,
  file: string,
  format: LabelledFormat,
  task: DataTask,
  visit: (example: TextExample | NerExample) => void,
): Promise<void> {
  const parser: LineParser<TextExample | NerExample> = task === "ner"
    ? nerExampleParser({ file, format })
    : textExampleParser({ file, format, task });
  for await (const example of parseStream(await open(), file, parser)) visit(example);
}

/** The format to read a file in for `task`: checks that the two go together. */
async function readableFormat(
  open: Open,
  file: string,
  format: LabelledFormat,
  task: DataTask | undefined,
): Promise<LabelledFormat> {
  if (format === "jsonl" && (task === "ner" || (!task && /"label"\s*:\s*\{/.test(await head(open))))) {
    format = "cluener";
  }
  if (isNerFormat(format) && task && task !== "ner") {
    throw new InvalidArgument(`${file}: ${format} data holds tags, usable for task ner only (not ${task})`);
  }
  if (!isNerFormat(format) && task === "ner") {
    throw new InvalidArgument(`${file}: task ner needs BIO or CLUENER data, got ${format}`);
  }
  return format;
}

/** The first 4 KiB of a file as text (enough to tell CLUENER from plain JSONL). */
async function head(open: Open): Promise<string> {
  const reader = (await open()).getReader();
  let text = "";
  const decoder = new TextDecoder();
  try {
    while (text.length < 4096) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return text.slice(0, 4096);
}

/**
 * Reads an uploaded file once per guess to learn its task (an upload does not say it): classify, then
 * multilabel when a label holds `|`, pair when a second text column is there. Keeps counts, not examples.
 */
async function scanDataset(
  open: Open,
  file: string,
  format: LabelledFormat,
): Promise<{ task: DataTask; format: LabelledFormat; examples: number; labels: Set<string> }> {
  const readAs = await readableFormat(open, file, format, undefined);
  let task: DataTask = isNerFormat(readAs) ? "ner" : "classify";
  for (let attempt = 0;; attempt++) {
    let examples = 0, multi = false;
    const labels = new Set<string>();
    try {
      await forEachExample(open, file, readAs, task, (e) => {
        examples++;
        if ("tags" in e) { for (const t of e.tags) t !== "O" && labels.add(t.slice(2)); }
        else {
          for (const l of e.labels) {
            labels.add(l);
            if (l.includes("|")) multi = true;
          }
        }
      });
      if (task === "classify" && multi && attempt < 2) {
        task = "multilabel";
        continue;
      }
      return { task, format: readAs, examples, labels };
    } catch (error) {
      const message = (error as Error).message;
      if (attempt >= 2) throw error;
      if (task === "classify" && /use task pair/.test(message)) task = "pair";
      else if (task !== "multilabel" && task !== "ner" && /multilabel|label is empty/.test(message)) {
        task = "multilabel";
      } else throw error;
    }
  }
}

/**
 * Checks and stores one data file as data set `name`. The bytes (a stream for uploads) are first written
 * to a staging object and read back as a stream for checking, so neither the file nor its examples are held
 * in memory, and a refused file replaces nothing: the published data set is a copy made after the checks.
 */
export async function storeDataset(
  store: ObjectStore,
  options: {
    name: string;
    file: string;
    bytes: Uint8Array | ReadableStream<Uint8Array>;
    format?: string;
    overwrite?: boolean;
    description?: string;
  },
): Promise<DatasetInfo & { sizeBytes: number }> {
  validateName(options.name, "header.name");
  const format = formatOf(options.file, options.format);
  const prefix = `${DATASETS_PREFIX}${options.name}`;
  // Before a byte is staged: a name taken is refused at once, not after a long upload.
  if (!options.overwrite && await isPublished(store, prefix)) {
    if (options.bytes instanceof ReadableStream) await options.bytes.cancel().catch(() => {});
    throw new AlreadyExists(`data set ${options.name} already exists; pass overwrite to replace it`);
  }
  const fileName = options.file.split("/").pop()!.replace(/[^A-Za-z0-9_.-]/g, "_") || `data.${format}`;
  const staging = `${STAGING_PREFIX}${crypto.randomUUID()}/${fileName}`;
  try {
    const staged = await store.put(staging, options.bytes);
    const open = () => store.getStream(staging);
    const scanned = await scanDataset(open, options.file, format);
    if (scanned.examples === 0) throw new InvalidArgument(`${options.file}: holds no examples`);
    const manifest = await publish(store, prefix, [[fileName, await open()]], {
      overwrite: options.overwrite ?? false,
      metadata: {
        kind: "dataset",
        format: scanned.format,
        examples: scanned.examples,
        labels: [...scanned.labels].sort(),
        ...(options.description ? { description: options.description } : {}),
      },
    });
    return { ...infoOf(options.name, manifest), sizeBytes: staged.size };
  } finally {
    await store.delete(staging).catch(() => {});
  }
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

/**
 * Every example of data set `name` for `task`, each part read as a stream; NotFound naming the field when
 * there is no such set.
 */
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
    const open = () => store.getStream(`${manifest.prefix}/${part.name}`);
    const file = `${name}/${part.name}`;
    // One push per example: spreading a part's examples as arguments overflows the stack past ~500 k.
    await forEachExample(
      open,
      file,
      await readableFormat(open, file, info.format, task),
      task,
      (e) => all.push(e),
    );
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

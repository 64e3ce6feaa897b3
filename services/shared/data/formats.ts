/**
 * Readers for the labelled formats of DESIGN.md, for fine-tuning and evaluation:
 *
 * - CSV with a header: `label,text`, `label,text_a,text_b` for pairs (common aliases such as `review`,
 *   `sentence`, `sentence1/2` accepted), multi-label labels joined by `|`. RFC 4180 quoting; a quoted
 *   field may span lines, and errors name the line where its record starts.
 * - JSONL: `{"text": .., "label": ..}`, pairs as `text_a`/`text_b` (or `sentence1`/`sentence2`,
 *   `text`/`text_pair`); a multi-label label may be an array or a `|`-joined string.
 * - BIO: one `token TAG` per line, a blank line between sentences (People's Daily, CoNLL).
 * - CLUENER JSONL: `{"text": .., "label": {"type": {"entity": [[start, end]]}}}`, end inclusive, offsets
 *   in characters (code points, as Python indexes them).
 *
 * Every malformed record is an InvalidArgument naming the file and line; no record is skipped. Only
 * empty lines between records are ignored, since they carry nothing.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";

export type LabelledFormat = "csv" | "jsonl" | "bio" | "cluener";
export type DataTask = "classify" | "multilabel" | "pair" | "ner";

/** Where an example came from, for error messages and reports. */
export interface SourceRef {
  file: string;
  /** 1-based line where the record starts. */
  line: number;
}

/** A sentence (or pair) with its label(s): classify and pair have one, multilabel zero or more. */
export interface TextExample {
  text: string;
  textB?: string;
  labels: string[];
  source: SourceRef;
}

/** A tagged sequence: `units[i]` (a character, or a word in word-level BIO files) carries `tags[i]`. */
export interface NerExample {
  units: string[];
  tags: string[];
  source: SourceRef;
}

export interface ReadOptions {
  task: DataTask;
  /** Name used in error messages. */
  file: string;
  /** Overrides the guess from the file name. */
  format?: LabelledFormat;
}

const TEXT_COLUMNS = ["text", "text_a", "sentence", "sentence1", "review", "content", "query"];
const TEXT_B_COLUMNS = ["text_b", "text_pair", "sentence2"];
const LABEL_COLUMNS = ["label", "labels"];
const TAG = /^(O|[BIES]-\S+)$/;

/** The format a file name implies for a task (`.jsonl`/`.json` is CLUENER for ner, plain JSONL otherwise). */
export function guessFormat(file: string, task: DataTask): LabelledFormat {
  const lower = file.toLowerCase().replace(/\.gz$/, "");
  if (lower.endsWith(".csv")) return "csv";
  if (lower.endsWith(".jsonl") || lower.endsWith(".json")) return task === "ner" ? "cluener" : "jsonl";
  if (/\.(bio|conll|bmes|txt|tsv)$/.test(lower) && task === "ner") return "bio";
  throw new InvalidArgument(
    `${file}: cannot tell the data format from the name; use .csv, .jsonl, .bio (or pass format csv|jsonl|bio|cluener)`,
  );
}

/** Parses labelled data of a text-level task (classify, multilabel, pair). */
export function parseTextExamples(content: string, options: ReadOptions): TextExample[] {
  if (options.task === "ner") throw new InvalidArgument(`task ner reads NER examples: use parseNerExamples`);
  const format = options.format ?? guessFormat(options.file, options.task);
  if (format === "csv") return parseCsvExamples(content, options);
  if (format === "jsonl") return parseJsonlExamples(content, options);
  throw new InvalidArgument(
    `${options.file}: format ${format} holds tags, not labels for task ${options.task}`,
  );
}

/** Parses labelled data of the ner task (BIO or CLUENER). */
export function parseNerExamples(content: string, options: Omit<ReadOptions, "task">): NerExample[] {
  const format = options.format ?? guessFormat(options.file, "ner");
  if (format === "bio") return parseBio(content, options.file);
  if (format === "cluener") return parseCluener(content, options.file);
  throw new InvalidArgument(
    `${options.file}: format ${format} has no tags for task ner (use bio or cluener)`,
  );
}

/** Reads a local file (`.gz` decompressed) and parses it for `task`. */
export async function readLabelledFile(
  path: string,
  options: { task: DataTask; format?: LabelledFormat },
): Promise<TextExample[] | NerExample[]> {
  const content = await readText(path);
  const read = { file: path, ...(options.format ? { format: options.format } : {}) };
  return options.task === "ner"
    ? parseNerExamples(content, read)
    : parseTextExamples(content, { ...read, task: options.task });
}

async function readText(path: string): Promise<string> {
  if (!path.endsWith(".gz")) return await Deno.readTextFile(path);
  using file = await Deno.open(path);
  const text = file.readable.pipeThrough(new DecompressionStream("gzip")).pipeThrough(
    new TextDecoderStream(),
  );
  let out = "";
  for await (const chunk of text) out += chunk;
  return out;
}

// ---------------------------------------------------------------------------------------------- CSV

/** One CSV record with the 1-based line it starts on. */
export interface CsvRecord {
  fields: string[];
  line: number;
}

/** RFC 4180 records; blank lines between records are skipped. */
export function parseCsv(content: string, file: string): CsvRecord[] {
  const records: CsvRecord[] = [];
  let i = content.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  const n = content.length;
  while (i < n) {
    const startLine = line;
    const fields: string[] = [];
    let atRecordEnd = false;
    // An empty line is no record.
    if (content[i] === "\n" || (content[i] === "\r" && content[i + 1] === "\n")) {
      i += content[i] === "\r" ? 2 : 1;
      line++;
      continue;
    }
    while (!atRecordEnd) {
      let field = "";
      if (content[i] === '"') {
        i++;
        for (;;) {
          if (i >= n) throw new InvalidArgument(`${file}:${startLine}: quoted field is never closed`);
          const c = content[i]!;
          if (c === '"') {
            if (content[i + 1] === '"') {
              field += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === "\n") line++;
          field += c;
          i++;
        }
        if (i < n && content[i] !== "," && content[i] !== "\n" && content[i] !== "\r") {
          throw new InvalidArgument(
            `${file}:${line}: unexpected ${
              JSON.stringify(content[i])
            } after a closing quote (quotes inside a field are doubled: "")`,
          );
        }
      } else {
        const start = i;
        while (i < n && content[i] !== "," && content[i] !== "\n" && content[i] !== "\r") i++;
        field = content.slice(start, i);
        if (field.includes('"')) {
          throw new InvalidArgument(
            `${file}:${line}: a quote inside an unquoted field (quote the whole field)`,
          );
        }
      }
      fields.push(field);
      if (i >= n) atRecordEnd = true;
      else if (content[i] === ",") i++;
      else {
        i += content[i] === "\r" && content[i + 1] === "\n" ? 2 : 1;
        line++;
        atRecordEnd = true;
      }
    }
    records.push({ fields, line: startLine });
  }
  return records;
}

function findColumn(header: string[], names: string[]): number {
  for (const name of names) {
    const index = header.indexOf(name);
    if (index >= 0) return index;
  }
  return -1;
}

function parseCsvExamples(content: string, options: ReadOptions): TextExample[] {
  const { file, task } = options;
  const records = parseCsv(content, file);
  if (records.length === 0) throw new InvalidArgument(`${file}: empty (a header line is required)`);
  const header = records[0]!.fields.map((name) => name.trim().toLowerCase());
  const labelAt = findColumn(header, LABEL_COLUMNS);
  const textAt = findColumn(header, TEXT_COLUMNS);
  const textBAt = findColumn(header, TEXT_B_COLUMNS);
  if (labelAt < 0 || textAt < 0) {
    throw new InvalidArgument(
      `${file}:1: header must name a label column (${LABEL_COLUMNS.join("|")}) and a text column (${
        TEXT_COLUMNS.join("|")
      }): got ${JSON.stringify(records[0]!.fields)}`,
    );
  }
  checkPairColumns(file, task, textBAt >= 0);
  const examples: TextExample[] = [];
  for (const record of records.slice(1)) {
    const where = `${file}:${record.line}`;
    if (record.fields.length !== header.length) {
      throw new InvalidArgument(`${where}: ${record.fields.length} fields, the header has ${header.length}`);
    }
    const example: TextExample = {
      text: requireText(record.fields[textAt]!, header[textAt]!, where),
      labels: splitLabels(record.fields[labelAt]!, task, where),
      source: { file, line: record.line },
    };
    if (textBAt >= 0) example.textB = requireText(record.fields[textBAt]!, header[textBAt]!, where);
    examples.push(example);
  }
  return examples;
}

function checkPairColumns(file: string, task: DataTask, hasTextB: boolean): void {
  if (task === "pair" && !hasTextB) {
    throw new InvalidArgument(`${file}: task pair needs a second text (${TEXT_B_COLUMNS.join("|")})`);
  }
  if (task !== "pair" && hasTextB) {
    throw new InvalidArgument(`${file}: holds sentence pairs (a text_b column); use task pair`);
  }
}

function requireText(value: string, column: string, where: string): string {
  if (value.trim() === "") throw new InvalidArgument(`${where}: ${column} is empty`);
  return value;
}

function splitLabels(value: string, task: DataTask, where: string): string[] {
  const trimmed = value.trim();
  if (task === "multilabel") {
    // An empty label list is a legitimate multi-label example: none of the labels applies.
    if (trimmed === "") return [];
    const labels = trimmed.split("|").map((label) => label.trim());
    if (labels.some((label) => label === "")) {
      throw new InvalidArgument(`${where}: label has an empty entry between '|': ${JSON.stringify(value)}`);
    }
    return [...new Set(labels)];
  }
  if (trimmed === "") throw new InvalidArgument(`${where}: label is empty`);
  return [trimmed];
}

// -------------------------------------------------------------------------------------------- JSONL

function* jsonLines(content: string, file: string): Generator<{ value: unknown; line: number }> {
  const lines = content.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const text = lines[index]!.replace(/^\ufeff/, "").trim();
    if (text === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new InvalidArgument(`${file}:${index + 1}: not valid JSON (${(error as Error).message})`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new InvalidArgument(`${file}:${index + 1}: each line must be a JSON object`);
    }
    yield { value, line: index + 1 };
  }
}

function pickField(object: Record<string, unknown>, names: string[]): [string, unknown] | undefined {
  for (const name of names) if (name in object) return [name, object[name]];
  return undefined;
}

function parseJsonlExamples(content: string, options: ReadOptions): TextExample[] {
  const { file, task } = options;
  const examples: TextExample[] = [];
  for (const { value, line } of jsonLines(content, file)) {
    const object = value as Record<string, unknown>;
    const where = `${file}:${line}`;
    const text = pickField(object, TEXT_COLUMNS);
    const textB = pickField(object, TEXT_B_COLUMNS);
    const label = pickField(object, LABEL_COLUMNS);
    if (!text) throw new InvalidArgument(`${where}: no text field (${TEXT_COLUMNS.join("|")})`);
    if (!label) throw new InvalidArgument(`${where}: no label field (${LABEL_COLUMNS.join("|")})`);
    if (typeof text[1] !== "string") throw new InvalidArgument(`${where}: ${text[0]} must be a string`);
    if (task === "pair" && !textB) {
      throw new InvalidArgument(`${where}: task pair needs a second text (${TEXT_B_COLUMNS.join("|")})`);
    }
    if (task !== "pair" && textB) throw new InvalidArgument(`${where}: holds a sentence pair; use task pair`);
    const example: TextExample = {
      text: requireText(text[1], text[0], where),
      labels: jsonLabels(label[1], task, where),
      source: { file, line },
    };
    if (textB) {
      if (typeof textB[1] !== "string") throw new InvalidArgument(`${where}: ${textB[0]} must be a string`);
      example.textB = requireText(textB[1], textB[0], where);
    }
    examples.push(example);
  }
  return examples;
}

function jsonLabels(value: unknown, task: DataTask, where: string): string[] {
  const scalar = (x: unknown): string => {
    if (typeof x === "string") return x;
    if (typeof x === "number" && Number.isFinite(x)) return String(x);
    if (typeof x === "boolean") return x ? "1" : "0";
    throw new InvalidArgument(`${where}: label must be a string or a number: got ${JSON.stringify(x)}`);
  };
  if (Array.isArray(value)) {
    if (task !== "multilabel") {
      throw new InvalidArgument(`${where}: label is a list; only task multilabel takes several labels`);
    }
    const labels = value.map((x) => scalar(x).trim());
    if (labels.some((label) => label === "")) {
      throw new InvalidArgument(`${where}: label list has an empty entry`);
    }
    return [...new Set(labels)];
  }
  return splitLabels(scalar(value), task, where);
}

// ---------------------------------------------------------------------------------------------- BIO

function parseBio(content: string, file: string): NerExample[] {
  const examples: NerExample[] = [];
  let units: string[] = [];
  let tags: string[] = [];
  let startLine = 0;
  const lines = content.split("\n");
  const flush = () => {
    if (units.length > 0) examples.push({ units, tags, source: { file, line: startLine } });
    units = [];
    tags = [];
  };
  for (let index = 0; index < lines.length; index++) {
    const raw = lines[index]!.replace(/\r$/, "").replace(/^\ufeff/, "");
    if (raw.trim() === "") {
      flush();
      continue;
    }
    // The tag is the last field; the token is what precedes it (CoNLL files may carry more columns).
    const match = /^(\S+)(?:\s+\S+)*\s+(\S+)\s*$/.exec(raw);
    if (!match) {
      throw new InvalidArgument(`${file}:${index + 1}: expected "token TAG": got ${JSON.stringify(raw)}`);
    }
    const tag = match[2]!;
    if (!TAG.test(tag)) {
      throw new InvalidArgument(
        `${file}:${index + 1}: tag must be O or B-/I-/E-/S-TYPE: got ${JSON.stringify(tag)}`,
      );
    }
    if (units.length === 0) startLine = index + 1;
    units.push(match[1]!);
    tags.push(tag);
  }
  flush();
  return examples;
}

// ------------------------------------------------------------------------------------------ CLUENER

function parseCluener(content: string, file: string): NerExample[] {
  const examples: NerExample[] = [];
  for (const { value, line } of jsonLines(content, file)) {
    const object = value as Record<string, unknown>;
    const where = `${file}:${line}`;
    if (typeof object.text !== "string" || object.text === "") {
      throw new InvalidArgument(`${where}: text must be a non-empty string`);
    }
    if (!("label" in object)) {
      throw new InvalidArgument(`${where}: label is missing (CLUENER test files carry no labels)`);
    }
    const units = [...object.text];
    const tags = new Array<string>(units.length).fill("O");
    const label = object.label;
    if (label === null || typeof label !== "object" || Array.isArray(label)) {
      throw new InvalidArgument(`${where}: label must be {"type": {"entity": [[start, end], ..]}}`);
    }
    for (const [type, entities] of Object.entries(label as Record<string, unknown>)) {
      if (entities === null || typeof entities !== "object" || Array.isArray(entities)) {
        throw new InvalidArgument(`${where}: label.${type} must map entity text to [[start, end], ..]`);
      }
      for (const [entity, spans] of Object.entries(entities as Record<string, unknown>)) {
        if (!Array.isArray(spans)) {
          throw new InvalidArgument(`${where}: label.${type}.${entity} must be a list of [start, end]`);
        }
        for (const span of spans) {
          const [start, end] = Array.isArray(span) ? span : [];
          if (
            !Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start ||
            end >= units.length
          ) {
            throw new InvalidArgument(
              `${where}: label.${type}.${entity} span ${
                JSON.stringify(span)
              } is not [start, end] inside the text of ${units.length} characters`,
            );
          }
          const covered = units.slice(start, end + 1).join("");
          if (covered !== entity) {
            throw new InvalidArgument(
              `${where}: label.${type} span [${start}, ${end}] covers ${JSON.stringify(covered)}, not ${
                JSON.stringify(entity)
              } (CLUENER ends are inclusive)`,
            );
          }
          for (let i = start; i <= end; i++) {
            if (tags[i] !== "O") {
              throw new InvalidArgument(
                `${where}: label.${type} span [${start}, ${end}] overlaps another entity at character ${i}`,
              );
            }
            tags[i] = (i === start ? "B-" : "I-") + type;
          }
        }
      }
    }
    examples.push({ units, tags, source: { file, line } });
  }
  return examples;
}

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
import { invalidUtf8Offset } from "../text/input.ts";

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
  /** Entity spans of this example that the overlap policy dropped (CLUENER files only). */
  droppedSpans?: number;
}

/**
 * What to do with entity spans that overlap (nested or duplicate): real annotated data has them (CLUENER's
 * training file nests 招商银行 inside a book title), and BIO tags can carry only one of them.
 * - `outer`: keep the longest span, drop the ones inside or across it (ties: the first in the file)
 * - `first`: keep spans in file order, dropping any that overlaps one kept before it
 * - `error`: refuse the file at the first overlap, naming it
 */
export type OverlapPolicy = "outer" | "first" | "error";
export const OVERLAP_POLICIES: readonly OverlapPolicy[] = ["outer", "first", "error"];

export interface ReadOptions {
  task: DataTask;
  /** Name used in error messages. */
  file: string;
  /** Overrides the guess from the file name. */
  format?: LabelledFormat;
  /** Overlapping entity spans (CLUENER). @default "outer" */
  overlaps?: OverlapPolicy;
}

/** The spans a whole data set's overlap policy dropped. */
export function droppedSpans(examples: Iterable<NerExample>): number {
  let n = 0;
  for (const e of examples) n += e.droppedSpans ?? 0;
  return n;
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
  return parseLines(content, textExampleParser(options));
}

/** Parses labelled data of the ner task (BIO or CLUENER). */
export function parseNerExamples(content: string, options: Omit<ReadOptions, "task">): NerExample[] {
  return parseLines(content, nerExampleParser(options));
}

/**
 * A reader fed one line at a time, so a string in memory and a stream of any length share one parser
 * (a data set of millions of rows is never held as one string).
 */
export interface LineParser<T> {
  /** Takes line `number` (1-based, without its "\n"); calls `emit` for each record the line completes. */
  line(text: string, number: number, emit: (item: T) => void): void;
  /** After the last line: completes the pending record, or refuses an unfinished one. */
  end(emit: (item: T) => void): void;
}

/** The line parser of a text-level task's format (CSV or JSONL). */
export function textExampleParser(options: ReadOptions): LineParser<TextExample> {
  if (options.task === "ner") throw new InvalidArgument(`task ner reads NER examples: use parseNerExamples`);
  const format = options.format ?? guessFormat(options.file, options.task);
  if (format === "csv") return csvExampleParser(options);
  if (format === "jsonl") return jsonlExampleParser(options);
  throw new InvalidArgument(
    `${options.file}: format ${format} holds tags, not labels for task ${options.task}`,
  );
}

/** The line parser of an NER format (BIO or CLUENER). */
export function nerExampleParser(options: Omit<ReadOptions, "task">): LineParser<NerExample> {
  const format = options.format ?? guessFormat(options.file, "ner");
  if (format === "bio") return bioParser(options.file);
  if (format === "cluener") return cluenerParser(options.file, options.overlaps ?? "outer");
  throw new InvalidArgument(
    `${options.file}: format ${format} has no tags for task ner (use bio or cluener)`,
  );
}

/** Runs a line parser over text in memory. */
export function parseLines<T>(content: string, parser: LineParser<T>): T[] {
  const out: T[] = [];
  const emit = (item: T) => void out.push(item);
  let number = 0;
  for (const line of splitLines(content)) parser.line(line, ++number, emit);
  parser.end(emit);
  return out;
}

/** Runs a line parser over a byte stream (UTF-8), yielding records as their lines arrive. */
export async function* parseStream<T>(
  chunks: AsyncIterable<Uint8Array>,
  file: string,
  parser: LineParser<T>,
): AsyncGenerator<T> {
  let ready: T[] = [];
  const emit = (item: T) => void ready.push(item);
  let number = 0;
  for await (const line of streamLines(chunks, file)) {
    parser.line(line, ++number, emit);
    if (ready.length > 0) {
      const batch = ready;
      ready = [];
      yield* batch;
    }
  }
  parser.end(emit);
  yield* ready;
}

/** The lines of a text (a leading byte-order mark dropped), found with indexOf: no array of every line. */
function* splitLines(content: string): Generator<string> {
  let at = content.charCodeAt(0) === 0xfeff ? 1 : 0;
  while (at <= content.length) {
    const next = content.indexOf("\n", at);
    if (next < 0) {
      if (at < content.length) yield content.slice(at);
      return;
    }
    yield content.slice(at, next);
    at = next + 1;
  }
}

/**
 * The lines of a UTF-8 byte stream (a leading byte-order mark dropped). Bytes that are not UTF-8 are an
 * InvalidArgument naming the file and the byte offset, as the uploads of every service report them.
 */
export async function* streamLines(chunks: AsyncIterable<Uint8Array>, file: string): AsyncGenerator<string> {
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
  let pending = "";
  let offset = 0;
  // The last bytes of the previous chunk: a character cut by the chunk boundary began there.
  let tail = new Uint8Array(0);
  const decode = (chunk?: Uint8Array): string => {
    try {
      return chunk ? decoder.decode(chunk, { stream: true }) : decoder.decode();
    } catch {
      if (!chunk) throw new InvalidArgument(`${file}: not valid UTF-8: it ends inside a character`);
      const joined = new Uint8Array(tail.length + chunk.length);
      joined.set(tail);
      joined.set(chunk, tail.length);
      // Continuation bytes at the start finish a character begun before the tail.
      let from = 0;
      while (from < tail.length && ((joined[from] ?? 0) & 0xc0) === 0x80) from++;
      const bad = Math.max(0, invalidUtf8Offset(joined, from));
      throw new InvalidArgument(`${file}: not valid UTF-8 at byte ${offset - tail.length + bad}`);
    }
  };
  const take = function* (text: string): Generator<string> {
    pending += text;
    let at = 0;
    for (let next = pending.indexOf("\n"); next >= 0; next = pending.indexOf("\n", at)) {
      yield pending.slice(at, next);
      at = next + 1;
    }
    pending = pending.slice(at);
  };
  for await (const chunk of chunks) {
    yield* take(decode(chunk));
    offset += chunk.length;
    tail = chunk.length >= 3 ? chunk.slice(-3) : Uint8Array.from([...tail, ...chunk].slice(-3));
  }
  yield* take(decode());
  if (pending !== "") yield pending;
}

/** Reads a local file (`.gz` decompressed) as a stream and parses it for `task`. */
export async function readLabelledFile(
  path: string,
  options: { task: DataTask; format?: LabelledFormat },
): Promise<TextExample[] | NerExample[]> {
  const read = { file: path, ...(options.format ? { format: options.format } : {}) };
  const parser: LineParser<TextExample | NerExample> = options.task === "ner"
    ? nerExampleParser(read)
    : textExampleParser({ ...read, task: options.task });
  using file = await Deno.open(path);
  const bytes = path.endsWith(".gz")
    ? file.readable.pipeThrough(new DecompressionStream("gzip"))
    : file.readable;
  const examples: Array<TextExample | NerExample> = [];
  for await (const example of parseStream(bytes, path, parser)) examples.push(example);
  return examples as TextExample[] | NerExample[];
}

// ---------------------------------------------------------------------------------------------- CSV

/** One CSV record with the 1-based line it starts on. */
export interface CsvRecord {
  fields: string[];
  line: number;
}

/** RFC 4180 records; blank lines between records are skipped. */
export function parseCsv(content: string, file: string): CsvRecord[] {
  return parseLines(content, csvRecordParser(file));
}

/**
 * RFC 4180 records, a line at a time: a quoted field may go on over several lines (its "\n" kept); a
 * record ends at the end of a line outside quotes, or at a "\r" there (CRLF, or a lone CR).
 */
function csvRecordParser(file: string): LineParser<CsvRecord> {
  let fields: string[] = [];
  let field = "";
  let quoted = false; // inside a quoted field that goes on past the end of the line
  let startLine = 0;
  return {
    line(text, number, emit) {
      let i = 0;
      const n = text.length;
      if (quoted) field += "\n";
      else {
        // An empty line is no record.
        if (text === "" || text === "\r") return;
        startLine = number;
      }
      for (;;) {
        if (!quoted && text[i] === '"') {
          quoted = true;
          i++;
        }
        if (quoted) {
          for (;;) {
            if (i >= n) return; // the field goes on on the next line
            const c = text[i]!;
            if (c === '"') {
              if (text[i + 1] === '"') {
                field += '"';
                i += 2;
                continue;
              }
              i++;
              quoted = false;
              break;
            }
            field += c;
            i++;
          }
          if (i < n && text[i] !== "," && text[i] !== "\r") {
            throw new InvalidArgument(
              `${file}:${number}: unexpected ${
                JSON.stringify(text[i])
              } after a closing quote (quotes inside a field are doubled: "")`,
            );
          }
        } else {
          const start = i;
          while (i < n && text[i] !== "," && text[i] !== "\r") i++;
          field = text.slice(start, i);
          if (field.includes('"')) {
            throw new InvalidArgument(
              `${file}:${number}: a quote inside an unquoted field (quote the whole field)`,
            );
          }
        }
        fields.push(field);
        field = "";
        if (i < n && text[i] === ",") {
          i++;
          continue;
        }
        emit({ fields, line: startLine });
        fields = [];
        // A "\r" ends the record: the line's end (CRLF) or, alone, a record boundary inside the line.
        i++;
        if (i >= n) return;
        startLine = number;
      }
    },
    end() {
      if (quoted) throw new InvalidArgument(`${file}:${startLine}: quoted field is never closed`);
    },
  };
}

function findColumn(header: string[], names: string[]): number {
  for (const name of names) {
    const index = header.indexOf(name);
    if (index >= 0) return index;
  }
  return -1;
}

function csvExampleParser(options: ReadOptions): LineParser<TextExample> {
  const { file, task } = options;
  const records = csvRecordParser(file);
  let header: string[] | undefined;
  let labelAt = -1, textAt = -1, textBAt = -1;
  const example = (record: CsvRecord): TextExample | undefined => {
    if (!header) {
      header = record.fields.map((name) => name.trim().toLowerCase());
      labelAt = findColumn(header, LABEL_COLUMNS);
      textAt = findColumn(header, TEXT_COLUMNS);
      textBAt = findColumn(header, TEXT_B_COLUMNS);
      if (labelAt < 0 || textAt < 0) {
        throw new InvalidArgument(
          `${file}:${record.line}: header must name a label column (${
            LABEL_COLUMNS.join("|")
          }) and a text column (${TEXT_COLUMNS.join("|")}): got ${JSON.stringify(record.fields)}`,
        );
      }
      checkPairColumns(file, task, textBAt >= 0);
      return undefined;
    }
    const where = `${file}:${record.line}`;
    if (record.fields.length !== header.length) {
      throw new InvalidArgument(`${where}: ${record.fields.length} fields, the header has ${header.length}`);
    }
    const out: TextExample = {
      text: requireText(record.fields[textAt]!, header[textAt]!, where),
      labels: splitLabels(record.fields[labelAt]!, task, where),
      source: { file, line: record.line },
    };
    if (textBAt >= 0) out.textB = requireText(record.fields[textBAt]!, header[textBAt]!, where);
    return out;
  };
  return {
    line(text, number, emit) {
      records.line(text, number, (record) => {
        const parsed = example(record);
        if (parsed) emit(parsed);
      });
    },
    end() {
      records.end(() => {});
      if (!header) throw new InvalidArgument(`${file}: empty (a header line is required)`);
    },
  };
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

/** One JSONL line as an object, or undefined for a blank line. */
function jsonObject(text: string, file: string, number: number): Record<string, unknown> | undefined {
  const trimmed = text.replace(/^\ufeff/, "").trim();
  if (trimmed === "") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch (error) {
    throw new InvalidArgument(`${file}:${number}: not valid JSON (${(error as Error).message})`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidArgument(`${file}:${number}: each line must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

function pickField(object: Record<string, unknown>, names: string[]): [string, unknown] | undefined {
  for (const name of names) if (name in object) return [name, object[name]];
  return undefined;
}

function jsonlExampleParser(options: ReadOptions): LineParser<TextExample> {
  const { file, task } = options;
  return {
    line(line, number, emit) {
      const object = jsonObject(line, file, number);
      if (!object) return;
      const where = `${file}:${number}`;
      const text = pickField(object, TEXT_COLUMNS);
      const textB = pickField(object, TEXT_B_COLUMNS);
      const label = pickField(object, LABEL_COLUMNS);
      if (!text) throw new InvalidArgument(`${where}: no text field (${TEXT_COLUMNS.join("|")})`);
      if (!label) throw new InvalidArgument(`${where}: no label field (${LABEL_COLUMNS.join("|")})`);
      if (typeof text[1] !== "string") throw new InvalidArgument(`${where}: ${text[0]} must be a string`);
      if (task === "pair" && !textB) {
        throw new InvalidArgument(`${where}: task pair needs a second text (${TEXT_B_COLUMNS.join("|")})`);
      }
      if (task !== "pair" && textB) {
        throw new InvalidArgument(`${where}: holds a sentence pair; use task pair`);
      }
      const example: TextExample = {
        text: requireText(text[1], text[0], where),
        labels: jsonLabels(label[1], task, where),
        source: { file, line: number },
      };
      if (textB) {
        if (typeof textB[1] !== "string") throw new InvalidArgument(`${where}: ${textB[0]} must be a string`);
        example.textB = requireText(textB[1], textB[0], where);
      }
      emit(example);
    },
    end() {},
  };
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

function bioParser(file: string): LineParser<NerExample> {
  let units: string[] = [];
  let tags: string[] = [];
  let startLine = 0;
  const flush = (emit: (item: NerExample) => void) => {
    if (units.length > 0) emit({ units, tags, source: { file, line: startLine } });
    units = [];
    tags = [];
  };
  return {
    line(text, number, emit) {
      const raw = text.replace(/\r$/, "").replace(/^\ufeff/, "");
      if (raw.trim() === "") return flush(emit);
      // The tag is the last field; the token is what precedes it (CoNLL files may carry more columns).
      const match = /^(\S+)(?:\s+\S+)*\s+(\S+)\s*$/.exec(raw);
      if (!match) {
        throw new InvalidArgument(`${file}:${number}: expected "token TAG": got ${JSON.stringify(raw)}`);
      }
      const tag = match[2]!;
      if (!TAG.test(tag)) {
        throw new InvalidArgument(
          `${file}:${number}: tag must be O or B-/I-/E-/S-TYPE: got ${JSON.stringify(tag)}`,
        );
      }
      if (units.length === 0) startLine = number;
      units.push(match[1]!);
      tags.push(tag);
    },
    end: flush,
  };
}

// ------------------------------------------------------------------------------------------ CLUENER

function cluenerParser(file: string, overlaps: OverlapPolicy): LineParser<NerExample> {
  if (!OVERLAP_POLICIES.includes(overlaps)) {
    throw new InvalidArgument(
      `overlaps must be one of ${OVERLAP_POLICIES.join(", ")}: got ${JSON.stringify(overlaps)}`,
    );
  }
  return {
    line(text, number, emit) {
      const object = jsonObject(text, file, number);
      if (object) emit(cluenerExample(object, file, number, overlaps));
    },
    end() {},
  };
}

interface Span {
  type: string;
  start: number;
  /** Inclusive, as CLUENER writes it. */
  end: number;
}

function cluenerExample(
  object: Record<string, unknown>,
  file: string,
  line: number,
  overlaps: OverlapPolicy,
): NerExample {
  const where = `${file}:${line}`;
  if (typeof object.text !== "string" || object.text === "") {
    throw new InvalidArgument(`${where}: text must be a non-empty string`);
  }
  if (!("label" in object)) {
    throw new InvalidArgument(`${where}: label is missing (CLUENER test files carry no labels)`);
  }
  const units = [...object.text];
  const tags = new Array<string>(units.length).fill("O");
  const found: Span[] = [];
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
        found.push({ type, start, end });
      }
    }
  }
  // Longest first for `outer` (a stable sort keeps file order among equals); file order otherwise.
  const order = overlaps === "outer"
    ? [...found].sort((a, b) => (b.end - b.start) - (a.end - a.start))
    : found;
  let dropped = 0;
  for (const { type, start, end } of order) {
    const taken = tags.slice(start, end + 1).findIndex((t) => t !== "O");
    if (taken >= 0) {
      if (overlaps === "error") {
        throw new InvalidArgument(
          `${where}: label.${type} span [${start}, ${end}] overlaps another entity at character ${
            start + taken
          } (overlaps outer or first keeps one of them)`,
        );
      }
      dropped++;
      continue;
    }
    for (let i = start; i <= end; i++) tags[i] = (i === start ? "B-" : "I-") + type;
  }
  return { units, tags, source: { file, line }, ...(dropped ? { droppedSpans: dropped } : {}) };
}

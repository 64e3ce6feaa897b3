/**
 * Extractive question answering data: readers for SQuAD-style files and a report of the answers that do not
 * fit their context.
 *
 * - JSONL, one question per line (DRCD, CMRC 2018 as shipped in ../shared/data/tasks/):
 *   `{"id", "title", "context", "question", "answers": [{"text", "answer_start"}]}`.
 * - SQuAD v1.1 JSON, one document: `{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
 *   "answers"}]}]}]}`. JSON has no streaming parse here, so this one is read whole; its errors name the JSON
 *   path (`data[3].paragraphs[0].qas[2].answers[0].answer_start`) where JSONL errors name the line.
 *
 * Offsets are code points, as Python indexes the strings that wrote `answer_start` (and as the WordPiece
 * tokenizer's offsets count): a character outside the BMP (a rare CJK extension character) is one position,
 * not two UTF-16 units. `answers` may be absent (questions to answer, not to train on).
 *
 * Malformed records (no context, no question field, `answer_start` not an integer or past the end of the
 * context) are an InvalidArgument naming the file, line and field. Two errors of the sources themselves are
 * counted and listed in the report instead, so an official file still reads: an answer whose `answer_start` is
 * inside the context but whose text is not there is left out of `answers` (never trained on) and kept in
 * `goldTexts` (the official metric scores texts); and, with `skipEmptyQuestions` (for training and evaluation
 * files), a question that is an empty string (two in the CMRC 2018 trial set) leaves its record out. Without
 * it (questions sent to be answered) an empty question is an InvalidArgument like the rest.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import { TextLineStream, toText } from "@std/streams";
import type { SourceRef } from "./formats.ts";

/** A gold answer: its text and where it starts in the context, in code points. */
export interface QaAnswer {
  text: string;
  start: number;
}

export interface QaExample {
  id: string;
  title: string;
  context: string;
  question: string;
  /** Answers whose text is at `start` in the context: what training and span labels use. */
  answers: QaAnswer[];
  /** Every gold answer text, matched or not: what the metric scores against. */
  goldTexts: string[];
  source: SourceRef;
}

/** An answer left out of training because the context does not hold its text at `answer_start`. */
export interface MismatchedAnswer {
  id: string;
  source: SourceRef;
  /** Index in the record's `answers`. */
  answer: number;
  text: string;
  start: number;
  /** What the context holds at [start, start + length of text). */
  found: string;
}

export interface QaReadReport {
  examples: number;
  answers: number;
  /** Count of answers left out of training (listed in `mismatched`, at most `MISMATCH_LIST_LIMIT`). */
  mismatchedCount: number;
  mismatched: MismatchedAnswer[];
  /** Records left out because their question is empty (where they are, at most `MISMATCH_LIST_LIMIT`). */
  emptyQuestionCount: number;
  emptyQuestions: SourceRef[];
}

/** The report lists this many mismatched answers; the count goes on. */
export const MISMATCH_LIST_LIMIT = 100;

export type QaFormat = "jsonl" | "squad";

/** `.json` is SQuAD's nested document, `.jsonl` one question per line. */
export function guessQaFormat(file: string): QaFormat {
  const lower = file.toLowerCase().replace(/\.gz$/, "");
  if (lower.endsWith(".jsonl")) return "jsonl";
  if (lower.endsWith(".json")) return "squad";
  throw new InvalidArgument(
    `${file}: cannot tell the QA data format from the name; use .jsonl (one question per line) or .json (SQuAD v1.1)`,
  );
}

export function emptyQaReport(): QaReadReport {
  return {
    examples: 0,
    answers: 0,
    mismatchedCount: 0,
    mismatched: [],
    emptyQuestionCount: 0,
    emptyQuestions: [],
  };
}

/** The code points of `text` (what answer_start and the tokenizer's offsets index). */
export function codePoints(text: string): string[] {
  return Array.from(text);
}

/**
 * Checks one question record (a JSONL line, or a SQuAD `qas` entry with its paragraph's context and title) and
 * builds the example; mismatched answers go to `report`. `where` prefixes every message (`file:line` or
 * `file: data[i].paragraphs[j].qas[k]`).
 */
export function qaExample(
  record: Record<string, unknown>,
  where: string,
  source: SourceRef,
  report: QaReadReport,
  skipEmptyQuestions = false,
): QaExample | undefined {
  const field = (name: string) => `${where}: ${name}`;
  const id = record.id ?? `${source.file}:${source.line}`;
  if (typeof id !== "string" && typeof id !== "number") {
    throw new InvalidArgument(`${field("id")} must be a string: got ${JSON.stringify(id)}`);
  }
  if (!("context" in record)) throw new InvalidArgument(`${field("context")} is missing`);
  const context = record.context;
  if (typeof context !== "string" || context.trim() === "") {
    throw new InvalidArgument(
      `${field("context")} must be a non-empty string: got ${JSON.stringify(context)}`,
    );
  }
  const question = record.question;
  if (skipEmptyQuestions && typeof question === "string" && question.trim() === "") {
    report.emptyQuestionCount++;
    if (report.emptyQuestions.length < MISMATCH_LIST_LIMIT) report.emptyQuestions.push(source);
    return undefined;
  }
  if (typeof question !== "string" || question.trim() === "") {
    throw new InvalidArgument(
      `${field("question")} must be a non-empty string: got ${JSON.stringify(question ?? null)}`,
    );
  }
  const title = record.title ?? "";
  if (typeof title !== "string") throw new InvalidArgument(`${field("title")} must be a string`);
  const raw = record.answers ?? [];
  if (!Array.isArray(raw)) {
    throw new InvalidArgument(`${field("answers")} must be a list of {"text", "answer_start"}`);
  }
  const chars = codePoints(context);
  const answers: QaAnswer[] = [];
  const goldTexts: string[] = [];
  raw.forEach((answer: unknown, i: number) => {
    const at = `answers[${i}]`;
    if (answer === null || typeof answer !== "object" || Array.isArray(answer)) {
      throw new InvalidArgument(`${field(at)} must be {"text", "answer_start"}`);
    }
    const { text, answer_start: start } = answer as Record<string, unknown>;
    if (typeof text !== "string" || text === "") {
      throw new InvalidArgument(
        `${field(`${at}.text`)} must be a non-empty string: got ${JSON.stringify(text)}`,
      );
    }
    const length = codePoints(text).length;
    if (!Number.isInteger(start) || (start as number) < 0) {
      throw new InvalidArgument(
        `${field(`${at}.answer_start`)} must be an integer >= 0: got ${JSON.stringify(start)}`,
      );
    }
    const s = start as number;
    if (s + length > chars.length) {
      throw new InvalidArgument(
        `${field(`${at}.answer_start`)} ${s} + the answer's ${length} characters is past the end of the ` +
          `context (${chars.length} characters)`,
      );
    }
    goldTexts.push(text);
    report.answers++;
    const found = chars.slice(s, s + length).join("");
    if (found === text) {
      answers.push({ text, start: s });
      return;
    }
    report.mismatchedCount++;
    if (report.mismatched.length < MISMATCH_LIST_LIMIT) {
      report.mismatched.push({ id: String(id), source, answer: i, text, start: s, found });
    }
  });
  report.examples++;
  return { id: String(id), title, context, question, answers, goldTexts, source };
}

/** One line of QA JSONL (1-based `number`): its example, or undefined for a blank (or skipped) line. */
export function qaJsonlLine(
  text: string,
  number: number,
  file: string,
  report: QaReadReport,
  skipEmptyQuestions = false,
): QaExample | undefined {
  const trimmed = text.trim();
  if (trimmed === "") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch (error) {
    throw new InvalidArgument(`${file}:${number}: not valid JSON (${(error as Error).message})`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidArgument(`${file}:${number}: each line must be a JSON object (one question)`);
  }
  const where = `${file}:${number}`;
  return qaExample(
    value as Record<string, unknown>,
    where,
    { file, line: number },
    report,
    skipEmptyQuestions,
  );
}

/** SQuAD v1.1 JSON (`data[].paragraphs[].qas[]`) as examples; `source.line` is the question's ordinal (1-based). */
export function parseSquadJson(
  content: string,
  file: string,
  report: QaReadReport,
  skipEmptyQuestions = false,
): QaExample[] {
  let doc: unknown;
  try {
    doc = JSON.parse(content.charCodeAt(0) === 0xfeff ? content.slice(1) : content);
  } catch (error) {
    throw new InvalidArgument(`${file}: not valid JSON (${(error as Error).message})`);
  }
  const list = (value: unknown, path: string): Record<string, unknown>[] => {
    if (!Array.isArray(value)) throw new InvalidArgument(`${file}: ${path} must be a list`);
    value.forEach((item, i) => {
      if (item === null || typeof item !== "object" || Array.isArray(item)) {
        throw new InvalidArgument(`${file}: ${path}[${i}] must be an object`);
      }
    });
    return value as Record<string, unknown>[];
  };
  if (doc === null || typeof doc !== "object" || !("data" in doc)) {
    throw new InvalidArgument(`${file}: a SQuAD file is {"data": [{"title", "paragraphs": [..]}]}`);
  }
  const out: QaExample[] = [];
  list((doc as { data: unknown }).data, "data").forEach((article, a) => {
    list(article.paragraphs, `data[${a}].paragraphs`).forEach((paragraph, p) => {
      list(paragraph.qas, `data[${a}].paragraphs[${p}].qas`).forEach((qa, q) => {
        const where = `${file}: data[${a}].paragraphs[${p}].qas[${q}]`;
        const record = { title: article.title ?? "", context: paragraph.context, ...qa };
        if (!("context" in paragraph)) delete (record as Record<string, unknown>).context;
        const example = qaExample(record, where, { file, line: out.length + 1 }, report, skipEmptyQuestions);
        if (example) out.push(example);
      });
    });
  });
  return out;
}

/** Parses QA data held in memory (JSONL or SQuAD JSON). */
export function parseQaExamples(
  content: string,
  options: { file: string; format?: QaFormat; skipEmptyQuestions?: boolean },
): { examples: QaExample[]; report: QaReadReport } {
  const report = emptyQaReport();
  const format = options.format ?? guessQaFormat(options.file);
  const skip = options.skipEmptyQuestions ?? false;
  if (format === "squad") return { examples: parseSquadJson(content, options.file, report, skip), report };
  const examples: QaExample[] = [];
  const lines = (content.charCodeAt(0) === 0xfeff ? content.slice(1) : content).split("\n");
  lines.forEach((text, n) => {
    const example = qaJsonlLine(text, n + 1, options.file, report, skip);
    if (example) examples.push(example);
  });
  return { examples, report };
}

/**
 * Reads a local QA file (`.gz` decompressed): JSONL as a stream, line by line; SQuAD JSON whole. Mismatched
 * answers are in the report, never thrown.
 */
export async function readQaFile(
  path: string,
  options: { format?: QaFormat; skipEmptyQuestions?: boolean } = {},
): Promise<{ examples: QaExample[]; report: QaReadReport }> {
  const format = options.format ?? guessQaFormat(path);
  const skip = options.skipEmptyQuestions ?? false;
  using file = await Deno.open(path);
  const bytes = path.endsWith(".gz")
    ? file.readable.pipeThrough(new DecompressionStream("gzip"))
    : file.readable;
  const report = emptyQaReport();
  const examples: QaExample[] = [];
  try {
    const text = bytes.pipeThrough(new TextDecoderStream("utf-8", { fatal: true }));
    if (format === "squad") {
      return { examples: parseSquadJson(await toText(text), path, report, skip), report };
    }
    let number = 0;
    for await (const line of text.pipeThrough(new TextLineStream())) {
      const example = qaJsonlLine(
        number === 0 ? line.replace(/^\ufeff/, "") : line,
        ++number,
        path,
        report,
        skip,
      );
      if (example) examples.push(example);
    }
  } catch (error) {
    if (error instanceof TypeError) throw new InvalidArgument(`${path}: not valid UTF-8 (${error.message})`);
    throw error;
  }
  return { examples, report };
}

/**
 * vocab.txt: one token per line, the line number (from 0) is the id. Read as `tokenizers` reads it
 * (`WordPiece::read_file`: each line with trailing whitespace trimmed). A token seen twice keeps its
 * line in `idToToken` but the later id wins in `vocab`, exactly as there (the published bert-base-chinese
 * vocab.txt repeats 53 tokens such as `##0`, and its line 344 is empty: an id whose token never matches).
 * Malformed means a file that is not a vocab.txt at all: a NUL or other control character, or a token
 * with whitespace inside (a "token count" file); both are refused naming the line.
 */
import { InvalidArgument } from "../errors.ts";

/** The BERT special tokens, in the order a trained vocabulary puts them first. */
export const SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] as const;

export interface Vocab {
  /** Token of each id. */
  idToToken: string[];
  /** Id of each token. */
  vocab: Map<string, number>;
}

/** Parses vocab.txt text; `source` names the file in error messages. */
export function parseVocabText(text: string, source = "vocab.txt"): Vocab {
  if (text.startsWith("\uFEFF")) text = text.slice(1);
  const lines = text.split("\n");
  // A final newline ends the last line; it does not start an empty one.
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  if (lines.length === 0) throw new InvalidArgument(`${source}: the vocabulary is empty`);
  const idToToken: string[] = new Array(lines.length);
  const vocab = new Map<string, number>();
  for (let id = 0; id < lines.length; id++) {
    const token = lines[id].replace(/\s+$/u, "");
    const lineNumber = id + 1;
    const bad = /[\s\p{Cc}]/u.exec(token);
    if (bad) {
      const what = bad[0] === " " || bad[0] === "\t"
        ? "whitespace"
        : `control character U+${bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
      throw new InvalidArgument(
        `${source} line ${lineNumber}: token ${
          JSON.stringify(token)
        } holds ${what}; vocab.txt has exactly one token a line`,
      );
    }
    vocab.set(token, id);
    idToToken[id] = token;
  }
  return { idToToken, vocab };
}

/** vocab.txt text of `idToToken`, one token a line, newline-terminated. */
export function formatVocabText(idToToken: readonly string[]): string {
  return idToToken.join("\n") + "\n";
}

/**
 * Builds a Vocab from a token→id object (tokenizer.json's `model.vocab`). Ids missing from the object
 * (what a vocab.txt with repeated tokens exports to) get a placeholder token that never matches text.
 */
export function vocabFromObject(
  entries: Record<string, number>,
  source = "tokenizer.json model.vocab",
): Vocab {
  const tokens = Object.keys(entries);
  if (tokens.length === 0) throw new InvalidArgument(`${source}: the vocabulary is empty`);
  const idToToken: string[] = [];
  const vocab = new Map<string, number>();
  for (const token of tokens) {
    const id = entries[token];
    if (!Number.isInteger(id) || id < 0 || id > 10_000_000) {
      throw new InvalidArgument(
        `${source}: token ${JSON.stringify(token)} has id ${id}, ids must be integers >= 0`,
      );
    }
    if (idToToken[id] !== undefined) {
      throw new InvalidArgument(
        `${source}: id ${id} is given to both ${JSON.stringify(idToToken[id])} and ${JSON.stringify(token)}`,
      );
    }
    idToToken[id] = token;
    vocab.set(token, id);
  }
  // A vocab.txt with repeated tokens exports with holes (the earlier ids lost their key); keep the ids.
  for (let id = 0; id < idToToken.length; id++) {
    if (idToToken[id] === undefined) idToToken[id] = `[unused-id-${id}]`;
  }
  return { idToToken, vocab };
}

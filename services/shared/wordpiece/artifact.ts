/**
 * Vocabularies in the store: `vocabs/<name>/` holds `vocab.txt` (the ids), `tokenizer.json` (for
 * Hugging Face consumers), `tokenizer_config.json` and `lineage.json`, published atomically behind a
 * manifest whose metadata is the VocabInfo below. Every service that needs a vocab by name
 * (tokenizer, sharding, trainer) loads it with `loadVocab`.
 */
import { NotFound } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { isPublished, listArtifacts, publish, readManifest } from "../store/publish.ts";
import { isName, validateName } from "../store/names.ts";
import { parseVocabText } from "./vocab.ts";
import { WordPieceTokenizer } from "./wordpiece.ts";

export interface VocabInfo {
  name: string;
  /** Number of ids (lines of vocab.txt). */
  size: number;
  lowercase: boolean;
  stripAccents: boolean;
  tokenizeChineseChars: boolean;
  specialTokens: string[];
  /** Hex sha256 of vocab.txt (WordPieceTokenizer.hash()). */
  sha256: string;
  source: "trained" | "imported";
  createdAt: string;
  /** Inputs and settings it was made from (job id, corpus and its hash, trainer settings). */
  lineage: Record<string, unknown>;
}

export function vocabPrefix(name: string, field = "vocab"): string {
  return `vocabs/${validateName(name, field)}`;
}

/** Publishes `tokenizer` as vocab `name`; AlreadyExists unless `overwrite`. */
export async function publishVocab(
  store: ObjectStore,
  name: string,
  tokenizer: WordPieceTokenizer,
  options: { source: VocabInfo["source"]; overwrite?: boolean; lineage?: Record<string, unknown> },
): Promise<VocabInfo> {
  const o = tokenizer.basicOptions;
  const info: VocabInfo = {
    name,
    size: tokenizer.idToToken.length,
    lowercase: o.lowercase,
    stripAccents: o.stripAccents,
    tokenizeChineseChars: o.tokenizeChineseChars,
    specialTokens: [...tokenizer.addedTokens].sort((a, b) =>
      tokenizer.vocab.get(a)! - tokenizer.vocab.get(b)!
    ),
    sha256: tokenizer.hash(),
    source: options.source,
    createdAt: new Date().toISOString(),
    lineage: options.lineage ?? {},
  };
  await publish(store, vocabPrefix(name), {
    "vocab.txt": tokenizer.vocabText(),
    "tokenizer.json": tokenizer.toTokenizerJson(),
    "tokenizer_config.json": tokenizer.tokenizerConfigJson(),
    "lineage.json": JSON.stringify(
      { artifact: { kind: "vocab", name, sha256: info.sha256 }, ...info.lineage },
      null,
      2,
    ),
  }, { overwrite: options.overwrite ?? false, metadata: { ...info } });
  return info;
}

/** The metadata of vocab `name`; NotFound when it is not published. */
export async function vocabInfo(store: ObjectStore, name: string, field = "vocab"): Promise<VocabInfo> {
  const prefix = vocabPrefix(name, field);
  if (!(await isPublished(store, prefix))) {
    throw new NotFound(`${field}: vocab "${name}" is not in the store`);
  }
  const manifest = await readManifest(store, prefix);
  return { name, createdAt: manifest.createdAt, ...(manifest.metadata as Partial<VocabInfo>) } as VocabInfo;
}

/** Loads vocab `name` with the normalizer settings it was published with. */
export async function loadVocab(
  store: ObjectStore,
  name: string,
  field = "vocab",
): Promise<{ tokenizer: WordPieceTokenizer; info: VocabInfo }> {
  const info = await vocabInfo(store, name, field);
  const text = await store.getText(`${vocabPrefix(name, field)}/vocab.txt`);
  const tokenizer = new WordPieceTokenizer(parseVocabText(text, `vocabs/${name}/vocab.txt`), {
    lowercase: info.lowercase,
    stripAccents: info.stripAccents,
    tokenizeChineseChars: info.tokenizeChineseChars,
    ...(info.specialTokens?.length ? { addedTokens: info.specialTokens } : {}),
  });
  return { tokenizer, info };
}

/** Every published vocab, by name. */
export async function listVocabs(store: ObjectStore): Promise<VocabInfo[]> {
  const prefixes = await listArtifacts(store, "vocabs/");
  const infos: VocabInfo[] = [];
  for (const prefix of prefixes) {
    const name = prefix.slice("vocabs/".length);
    if (isName(name)) infos.push(await vocabInfo(store, name));
  }
  return infos.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

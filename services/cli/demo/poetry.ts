/**
 * The demo's data, built from the npm package `chinese-poetry` (MIT; ~315,000 Tang and Song poems, traditional
 * characters), which any machine with npm can install:
 *
 * - a pretraining corpus in the google-research/bert format: one poem a document (blank line between documents),
 *   one line of the poem a sentence;
 * - a labelled task: who wrote a 五言律詩 (eight lines of five characters), among four Tang poets (`POETS`), with a
 *   held-out split. Every poem has the same form and length, so counting lines or characters says nothing: the
 *   model has to read the words. (The earlier task, the form itself, was solved by counting; `formOf` still picks
 *   the form, which is now held fixed.)
 */
import { join } from "@std/path";

export const FORMS = ["五言絕句", "七言絕句", "五言律詩", "七言律詩"] as const;

/** The poets of the demo task: the four with the most 五言律詩 among the best known (李商隱 has 148). */
export const POETS = ["杜甫", "白居易", "李白", "李商隱"] as const;
/** The one form every labelled poem has. */
export const TASK_FORM = "五言律詩";

export interface Poem {
  title: string;
  author: string;
  /** Lines as the package stores them: usually a couplet per entry ("…，…。"). */
  paragraphs: string[];
}

/** Where `deno install` put the package. */
export function poetryDir(projectRoot: string): string {
  return join(projectRoot, "node_modules", "chinese-poetry", "dist", "quantangshi");
}

/** Poems of one dynasty, in the package's file order (deterministic), at most `limit`. */
export async function* readPoems(
  dir: string,
  dynasty: "tang" | "song",
  limit = Infinity,
): AsyncGenerator<Poem> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.startsWith(`poet.${dynasty}.`)) files.push(entry.name);
  }
  if (files.length === 0) {
    throw new Error(
      `no poet.${dynasty}.*.json files in ${dir}: run \`make deps\` to install the chinese-poetry package`,
    );
  }
  files.sort((a, b) => Number(a.split(".")[2]) - Number(b.split(".")[2]));
  let count = 0;
  for (const file of files) {
    const poems = JSON.parse(await Deno.readTextFile(join(dir, file))) as Poem[];
    for (const poem of poems) {
      if (!Array.isArray(poem.paragraphs) || poem.paragraphs.length === 0) continue;
      yield poem;
      if (++count >= limit) return;
    }
  }
}

/** Splits couplets into verse lines at Chinese punctuation: "白日依山盡，黃河入海流。" → ["白日依山盡", "黃河入海流"]. */
export function verseLines(poem: Poem): string[] {
  return poem.paragraphs.flatMap((p) => p.split(/[，。！？；、]/)).map((l) => l.trim()).filter((l) =>
    l.length > 0
  );
}

/** The regular form of a poem, or undefined when it is not one of the four (irregular, or variant characters). */
export function formOf(poem: Poem): (typeof FORMS)[number] | undefined {
  const lines = verseLines(poem);
  if (lines.length !== 4 && lines.length !== 8) return undefined;
  const width = Array.from(lines[0]!).length;
  if ((width !== 5 && width !== 7) || !lines.every((l) => Array.from(l).length === width)) return undefined;
  if (poem.paragraphs.some((p) => /[□（）()\[\]]/.test(p))) return undefined;
  return `${width === 5 ? "五言" : "七言"}${lines.length === 4 ? "絕句" : "律詩"}` as (typeof FORMS)[number];
}

/** A corpus document: one sentence (verse couplet) a line. */
export function documentText(poem: Poem): string {
  return poem.paragraphs.map((p) => p.trim()).filter((p) => p.length > 0).join("\n");
}

export interface DemoData {
  corpusPath: string;
  trainPath: string;
  evalPath: string;
  documents: number;
  corpusBytes: number;
  train: { text: string; label: string }[];
  eval: { text: string; label: string }[];
}

/**
 * Writes corpus.txt, train.csv and eval.csv into `outDir`. Labelled poems are the 五言律詩 of the `POETS`, the
 * same number from each (at most `labelledPerPoet`, fewer when a poet has fewer); every 5th is held out.
 */
export async function buildDemoData(
  projectRoot: string,
  outDir: string,
  sizes: { corpusPoems: number; labelledPerPoet: number },
): Promise<DemoData> {
  await Deno.mkdir(outDir, { recursive: true });
  const dir = poetryDir(projectRoot);
  const corpusPath = join(outDir, "corpus.txt");
  const corpus = await Deno.open(corpusPath, { write: true, create: true, truncate: true });
  const encoder = new TextEncoder();
  let documents = 0, corpusBytes = 0;
  const perPoet = new Map<string, { text: string; label: string }[]>(POETS.map((p) => [p, []]));
  // Tang poems first, then Song, so a short corpus is still mostly the Tang classics.
  for (const dynasty of ["tang", "song"] as const) {
    for await (const poem of readPoems(dir, dynasty)) {
      if (documents < sizes.corpusPoems) {
        const bytes = encoder.encode(documentText(poem) + "\n\n");
        await corpus.write(bytes);
        corpusBytes += bytes.length;
        documents++;
      }
      const bucket = dynasty === "tang" ? perPoet.get(poem.author) : undefined;
      if (bucket && bucket.length < sizes.labelledPerPoet && formOf(poem) === TASK_FORM) {
        bucket.push({ text: poem.paragraphs.join(""), label: poem.author });
      }
      if (documents >= sizes.corpusPoems && dynasty === "song") break;
    }
  }
  corpus.close();
  // As many from each poet, so the majority class is chance (25%), round-robin so any prefix is balanced too.
  const buckets = [...perPoet.values()];
  const each = Math.min(...buckets.map((b) => b.length));
  const labelled = Array.from({ length: each }, (_, i) => buckets.map((b) => b[i]!)).flat();
  const train = labelled.filter((_, i) => i % 5 !== 0);
  const evalSet = labelled.filter((_, i) => i % 5 === 0);
  const csv = (rows: { text: string; label: string }[]) =>
    "label,text\n" + rows.map((r) => `${r.label},"${r.text.replaceAll('"', '""')}"`).join("\n") + "\n";
  const trainPath = join(outDir, "train.csv");
  const evalPath = join(outDir, "eval.csv");
  await Deno.writeTextFile(trainPath, csv(train));
  await Deno.writeTextFile(evalPath, csv(evalSet));
  return { corpusPath, trainPath, evalPath, documents, corpusBytes, train, eval: evalSet };
}

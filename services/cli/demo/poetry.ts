/**
 * The demo's data, built from the npm package `chinese-poetry` (MIT; ~315,000 Tang and Song poems, traditional
 * characters), which any machine with npm can install:
 *
 * - a pretraining corpus in the google-research/bert format: one poem a document (blank line between documents),
 *   one line of the poem a sentence;
 * - a labelled task: the form of a regular poem (五言絕句, 七言絕句, 五言律詩, 七言律詩: 4 or 8 lines of 5 or 7
 *   characters), with a held-out split. The form is read from the poem's own structure, so the labels are exact,
 *   and a model has to see where lines break and how long they are, which a bag of character pairs cannot.
 */
import { join } from "@std/path";

export const FORMS = ["五言絕句", "七言絕句", "五言律詩", "七言律詩"] as const;

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
 * Writes corpus.txt, train.csv and eval.csv into `outDir`. Labelled poems are balanced across the four forms;
 * every 5th labelled poem is held out for evaluation.
 */
export async function buildDemoData(
  projectRoot: string,
  outDir: string,
  sizes: { corpusPoems: number; labelledPerForm: number },
): Promise<DemoData> {
  await Deno.mkdir(outDir, { recursive: true });
  const dir = poetryDir(projectRoot);
  const corpusPath = join(outDir, "corpus.txt");
  const corpus = await Deno.open(corpusPath, { write: true, create: true, truncate: true });
  const encoder = new TextEncoder();
  let documents = 0, corpusBytes = 0;
  const perForm = new Map<string, { text: string; label: string }[]>(FORMS.map((f) => [f, []]));
  // Tang poems first, then Song, so a short corpus is still mostly the Tang classics.
  for (const dynasty of ["tang", "song"] as const) {
    for await (const poem of readPoems(dir, dynasty, sizes.corpusPoems)) {
      if (documents < sizes.corpusPoems) {
        const bytes = encoder.encode(documentText(poem) + "\n\n");
        await corpus.write(bytes);
        corpusBytes += bytes.length;
        documents++;
      }
      const form = formOf(poem);
      const bucket = form && perForm.get(form);
      if (bucket && bucket.length < sizes.labelledPerForm) {
        bucket.push({ text: poem.paragraphs.join(""), label: form! });
      }
      const labelledDone = [...perForm.values()].every((b) => b.length >= sizes.labelledPerForm);
      if (documents >= sizes.corpusPoems && labelledDone) break;
    }
  }
  corpus.close();
  // Round-robin over the forms, so both splits (and any prefix of them) hold every form in equal numbers.
  const buckets = [...perForm.values()];
  const labelled = Array.from({ length: sizes.labelledPerForm }, (_, i) => buckets.map((b) => b[i]))
    .flat()
    .filter((e): e is { text: string; label: string } => e !== undefined);
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

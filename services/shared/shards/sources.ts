/**
 * Naming and weighting the sources of a multi-source shard build, shared by the CLI (which uploads a
 * folder's files as corpora), the builder's own command line and the bench: a folder means every
 * `*.txt` / `*.txt.gz` file in it, each a source named by its file name without that ending; a mix
 * file is `name weight` lines.
 *
 * @module
 */

/** `news.txt.gz` → `news`, `a.txt` → `a`; null for a file that is not corpus text. */
export function sourceNameOf(fileName: string): string | null {
  const match = /^(.+)\.txt(?:\.gz)?$/.exec(fileName);
  return match ? match[1]! : null;
}

/** The corpus files of a local folder, sorted by name, as `{name, path}` (name from {@linkcode sourceNameOf}). */
export async function corpusFilesIn(dir: string): Promise<{ name: string; path: string }[]> {
  const out: { name: string; path: string }[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const name = entry.isFile ? sourceNameOf(entry.name) : null;
    if (name !== null && !entry.name.startsWith(".")) {
      out.push({ name, path: `${dir.replace(/[\\/]+$/, "")}/${entry.name}` });
    }
  }
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}

/**
 * Source weights from `NAME=WEIGHT` strings and mix-file text (`name weight` per line, `#` comments,
 * blank lines skipped; a later entry for a name wins). Throws a TypeError naming `where` and the line
 * for a malformed entry or a weight that is not a number >= 0, and one listing the known names for an
 * unknown name.
 */
export function parseWeights(
  entries: { text: string; where: string; form: "flag" | "file" }[],
  known: readonly string[],
): Map<string, number> {
  const weights = new Map<string, number>();
  for (const { text, where, form } of entries) {
    const lines = form === "flag" ? [text] : text.split(/\r?\n/);
    lines.forEach((raw, i) => {
      const line = raw.replace(/#.*$/, "").trim();
      if (line === "") return;
      const at = form === "flag" ? where : `${where} line ${i + 1}`;
      const parts = form === "flag" ? line.split("=") : line.split(/\s+/);
      if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
        throw new TypeError(
          `${at}: expected ${form === "flag" ? "NAME=WEIGHT" : "a 'name weight' line"}: got "${raw.trim()}"`,
        );
      }
      const [name, value] = parts as [string, string];
      const weight = Number(value);
      if (!Number.isFinite(weight) || weight < 0) {
        throw new TypeError(`${at}: the weight of '${name}' must be a number >= 0: got "${value}"`);
      }
      if (!known.includes(name)) {
        throw new TypeError(`${at}: unknown source '${name}' (the sources are: ${known.join(", ")})`);
      }
      weights.set(name, weight);
    });
  }
  return weights;
}

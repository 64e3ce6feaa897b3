/** Subset of jsr:@std/fs (see README.md). */
import { dirname, join } from "./path.ts";

export async function exists(
  path: string | URL,
  options?: { isFile?: boolean; isDirectory?: boolean },
): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    if (options?.isFile && !info.isFile) return false;
    if (options?.isDirectory && !info.isDirectory) return false;
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
export function existsSync(path: string | URL): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
export async function ensureDir(dir: string | URL): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
}
export function ensureDirSync(dir: string | URL): void {
  Deno.mkdirSync(dir, { recursive: true });
}
export async function ensureFile(file: string): Promise<void> {
  await ensureDir(dirname(file));
  if (!(await exists(file))) await Deno.writeFile(file, new Uint8Array());
}
export async function emptyDir(dir: string): Promise<void> {
  await ensureDir(dir);
  for await (const entry of Deno.readDir(dir)) await Deno.remove(join(dir, entry.name), { recursive: true });
}
export async function copy(src: string, dest: string, options?: { overwrite?: boolean }): Promise<void> {
  const info = await Deno.stat(src);
  if (!options?.overwrite && (await exists(dest))) {
    throw new Deno.errors.AlreadyExists(`'${dest}' already exists`);
  }
  if (info.isDirectory) {
    await ensureDir(dest);
    for await (const entry of Deno.readDir(src)) {
      await copy(join(src, entry.name), join(dest, entry.name), options);
    }
  } else {
    await ensureDir(dirname(dest));
    await Deno.copyFile(src, dest);
  }
}
export async function move(src: string, dest: string): Promise<void> {
  await Deno.rename(src, dest);
}
export interface WalkEntry {
  path: string;
  name: string;
  isFile: boolean;
  isDirectory: boolean;
  isSymlink: boolean;
}
export async function* walk(
  root: string,
  options: {
    includeDirs?: boolean;
    includeFiles?: boolean;
    exts?: string[];
    maxDepth?: number;
    skip?: RegExp[];
  } = {},
): AsyncIterableIterator<WalkEntry> {
  const { includeDirs = true, includeFiles = true, exts, maxDepth = Infinity, skip = [] } = options;
  const visit = async function* (dir: string, depth: number): AsyncIterableIterator<WalkEntry> {
    const entries: Deno.DirEntry[] = [];
    for await (const entry of Deno.readDir(dir)) entries.push(entry);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (skip.some((re) => re.test(path))) continue;
      if (entry.isDirectory) {
        if (includeDirs) yield { path, ...entry };
        if (depth < maxDepth) yield* visit(path, depth + 1);
      } else if (includeFiles && (!exts || exts.some((e) => entry.name.endsWith(e)))) {
        yield { path, ...entry };
      }
    }
  };
  if (includeDirs && !skip.some((re) => re.test(root))) {
    yield {
      path: root,
      name: root.split("/").pop() ?? root,
      isFile: false,
      isDirectory: true,
      isSymlink: false,
    };
  }
  if (maxDepth > 0) yield* visit(root, 1);
}

/** Subset of jsr:@std/path (see README.md), over node:path and node:url. */
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const { join, dirname, basename, extname, resolve, relative, normalize, isAbsolute, parse, format } =
  path;
export const SEPARATOR = path.sep;
export const DELIMITER = path.delimiter;
export function fromFileUrl(url: string | URL): string {
  return fileURLToPath(url);
}
export function toFileUrl(p: string): URL {
  return pathToFileURL(p);
}

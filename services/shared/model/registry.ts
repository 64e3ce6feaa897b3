/**
 * Where model versions live in the store and how a request's model reference resolves to one: the part the
 * trainer (which writes `models/<name>/<version>/`) and the inference service (which reads them) share.
 *
 * Versions are UTC timestamps `YYYYMMDDTHHMMSSZ` (common.proto): they sort as strings, so the latest is the
 * greatest. A version is visible once its MANIFEST.json is published (store/publish.ts).
 */
import { InvalidArgument, NotFound } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { isPublished, listArtifacts } from "../store/publish.ts";
import { isName, validateName } from "../store/names.ts";

export const MODELS_PREFIX = "models/";

// Model names follow the one rule of every artifact; re-exported because model code looks for it here.
export { validateName };

/** Checks a model version (one key segment, like a name); throws InvalidArgument naming `field`. */
export function validateVersion(version: unknown, field = "version"): string {
  if (!isName(version)) {
    throw new InvalidArgument(
      `${field} must be a published version like 20261125T150405Z: got ${JSON.stringify(version)}`,
    );
  }
  return version;
}

/** `models/<name>/<version>` (no trailing slash); the caller checks the parts. */
export function modelPrefix(name: string, version: string): string {
  return `${MODELS_PREFIX}${name}/${version}`;
}

/** `20261125T150405Z` for a date (to the second, UTC). */
export function versionFor(date: Date): string {
  return date.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/** Published versions of one model, oldest first. */
export async function listVersions(store: ObjectStore, name: string, field = "model"): Promise<string[]> {
  const prefixes = await listArtifacts(store, `${MODELS_PREFIX}${validateName(name, field)}/`);
  return prefixes.map((p) => p.split("/")[2] ?? "").filter((v) => v !== "").sort();
}

/** Every published model name with its versions (oldest first), names sorted. */
export async function listModelVersions(store: ObjectStore): Promise<Map<string, string[]>> {
  const byName = new Map<string, string[]>();
  for (const prefix of await listArtifacts(store, MODELS_PREFIX)) {
    const [, name, version, ...rest] = prefix.split("/");
    if (!name || !version || rest.length > 0) continue;
    const versions = byName.get(name) ?? [];
    versions.push(version);
    byName.set(name, versions);
  }
  for (const versions of byName.values()) versions.sort();
  return new Map([...byName].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * The pinned version if published, else the latest; NotFound naming the model otherwise. With `field` (the
 * request field holding the reference, e.g. `finetune.base`), errors start with it and the name and version
 * are checked as `<field>.name` / `<field>.version`.
 */
export async function resolveVersion(
  store: ObjectStore,
  name: string,
  version?: string,
  field?: string,
): Promise<string> {
  const where = field ? `${field}: ` : "";
  validateName(name, field ? `${field}.name` : "model");
  if (version) {
    validateVersion(version, field ? `${field}.version` : "version");
    if (!(await isPublished(store, modelPrefix(name, version)))) {
      throw new NotFound(`${where}model ${name} has no version ${version} in the store`);
    }
    return version;
  }
  const latest = (await listVersions(store, name)).at(-1);
  if (!latest) {
    throw new NotFound(`${where}model ${name} is not in the store (no published models/${name}/<version>/)`);
  }
  return latest;
}

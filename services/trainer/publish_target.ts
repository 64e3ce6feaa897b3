/**
 * The version a job publishes, fixed before anything is written (`jobs/<id>/publish.json`), so a trainer
 * killed while publishing completes the same version after a restart instead of adding another one.
 */
import type { ObjectStore } from "../shared/store/store.ts";
import { freshVersion } from "./models.ts";
import { withRetry } from "./checkpoint.ts";

export async function publishTarget(
  store: ObjectStore,
  jobId: string,
  name: string,
): Promise<{ name: string; version: string }> {
  const key = `jobs/${jobId}/publish.json`;
  const existing = await store.getJson<{ name: string; version: string }>(key).catch(() => null);
  if (existing && existing.name === name && existing.version) return existing;
  const target = { name, version: await freshVersion(store, name) };
  await withRetry(`writing ${key}`, () => store.putJson(key, target));
  return target;
}

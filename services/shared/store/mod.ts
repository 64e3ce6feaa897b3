/**
 * The object store: one bucket of artifacts (`corpora/`, `vocabs/`, `shards/`, `jobs/`, `models/`)
 * behind one interface, kept in a local folder (the embedded default) or in S3 (MinIO).
 *
 * ```ts ignore
 * import { openStore, publish, readManifest, storeFromEnv } from "../shared/store/mod.ts";
 *
 * const store = storeFromEnv(); // BERTFORGE_STORE_DIR or BERTFORGE_S3_*; default .bertforge/store
 * await store.put("corpora/poems/train.txt", (await Deno.open("poems.txt")).readable);
 * for await (const line of (await store.getStream("corpora/poems/train.txt")).pipeThrough(new TextDecoderStream())) {
 *   // ...
 * }
 *
 * // An artifact of several objects appears only once its MANIFEST.json is written, last.
 * await publish(store, "vocabs/poems", { "vocab.txt": vocabText, "tokenizer.json": tokenizerJson }, {
 *   metadata: { corpus: "corpora/poems", size: 8000 },
 * });
 * const manifest = await readManifest(store, "vocabs/poems"); // NotFound until published
 * ```
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import { LocalStore } from "./local.ts";
import { type S3Settings, S3Store } from "./s3.ts";
import type { ObjectStore } from "./store.ts";
import { tracedStore } from "./traced.ts";

export * from "./store.ts";
export * from "./publish.ts";
export * from "./names.ts";
export { hashFile, Sha256, sha256 } from "./hash.ts";
export { LocalStore } from "./local.ts";
export { type S3Settings, S3Store } from "./s3.ts";
export { tracedStore } from "./traced.ts";

/** The embedded store's folder when nothing else is configured. */
export const DEFAULT_STORE_DIR = ".bertforge/store";

/** Where the store lives: a local folder, or an S3 endpoint. */
export type StoreSettings = { dir: string } | { s3: S3Settings };

/** The store the settings name, its operations traced as `store.*` spans inside a trace (traced.ts). */
export function openStore(settings: StoreSettings): ObjectStore {
  if ("s3" in settings && settings.s3) return tracedStore(new S3Store(settings.s3));
  if ("dir" in settings && typeof settings.dir === "string" && settings.dir !== "") {
    return tracedStore(new LocalStore(settings.dir));
  }
  throw new InvalidArgument("store settings must give either dir or s3");
}

/**
 * The store settings from the environment (docs/conventions.md): S3 when `BERTFORGE_S3_URL` is set
 * (`BERTFORGE_S3_BUCKET`, `BERTFORGE_S3_ACCESS_KEY`, `BERTFORGE_S3_SECRET_KEY`, `BERTFORGE_S3_REGION`),
 * otherwise the folder `BERTFORGE_STORE_DIR` (default `.bertforge/store`).
 */
export function storeSettingsFromEnv(
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): StoreSettings {
  const url = env("BERTFORGE_S3_URL");
  if (url) {
    const accessKey = env("BERTFORGE_S3_ACCESS_KEY");
    const secretKey = env("BERTFORGE_S3_SECRET_KEY");
    if (!accessKey || !secretKey) {
      throw new InvalidArgument(
        "BERTFORGE_S3_ACCESS_KEY and BERTFORGE_S3_SECRET_KEY must be set when BERTFORGE_S3_URL is",
      );
    }
    return {
      s3: {
        url,
        bucket: env("BERTFORGE_S3_BUCKET") || "bertforge",
        accessKey,
        secretKey,
        region: env("BERTFORGE_S3_REGION") || "us-east-1",
      },
    };
  }
  return { dir: env("BERTFORGE_STORE_DIR") || DEFAULT_STORE_DIR };
}

/** Opens the store the environment names; see {@linkcode storeSettingsFromEnv}. */
export function storeFromEnv(env?: (name: string) => string | undefined): ObjectStore {
  return openStore(storeSettingsFromEnv(env));
}

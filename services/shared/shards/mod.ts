/**
 * Pretraining shards: the binary format, the manifest, the writer the sharding service uses and the
 * streaming reader the trainer uses.
 *
 * ```ts
 * import { InstanceStream } from "../shared/shards/mod.ts";
 *
 * const stream = await InstanceStream.open(store, "poems-128", { seed: 1, rank: 0, world: 1 });
 * const batch = await stream.nextBatch(32); // engine Batch, (B, T) = (32, max_seq_length)
 * const saved = stream.cursor(); // JSON; InstanceStream.open(..., { cursor: saved }) resumes exactly
 * ```
 *
 * @module
 */
export * from "./format.ts";
export * from "./manifest.ts";
export * from "./masking.ts";
export * from "./rng.ts";
export * from "./batch.ts";
export * from "./writer.ts";
export * from "./reader.ts";

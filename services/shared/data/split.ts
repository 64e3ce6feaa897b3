/**
 * A deterministic train/eval split: the same seed and fraction always hold out the same examples,
 * whatever the machine. Both parts keep the original order.
 *
 * @module
 */
import { InvalidArgument } from "../errors.ts";
import { permutation, Rng } from "../shards/rng.ts";

export function trainEvalSplit<T>(
  items: readonly T[],
  options: { evalFraction: number; seed: number },
): { train: T[]; eval: T[] } {
  const { evalFraction, seed } = options;
  if (!(evalFraction >= 0 && evalFraction < 1)) {
    throw new InvalidArgument(`evalFraction must be in [0, 1): got ${evalFraction}`);
  }
  const evalCount = Math.round(items.length * evalFraction);
  const held = new Uint8Array(items.length);
  const order = permutation(items.length, Rng.seeded(seed, 0xe7a1));
  for (let i = 0; i < evalCount; i++) held[order[i]!] = 1;
  const train: T[] = [];
  const evalPart: T[] = [];
  items.forEach((item, i) => (held[i] ? evalPart : train).push(item));
  return { train, eval: evalPart };
}

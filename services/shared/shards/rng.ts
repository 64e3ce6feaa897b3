/**
 * The one seeded random number generator of the data pipeline: xoshiro128** (Blackman & Vigna), 32-bit
 * state words so it runs at full speed on JS numbers, with a state that is JSON-serialisable and restored
 * exactly. The helpers mirror Python's `random` methods create_pretraining_data.py calls (`random`,
 * `randint` with an inclusive upper bound, `shuffle`), so the code reads like the reference.
 *
 * @module
 */

/** splitmix32: spreads one seed word into well-mixed state words (xoshiro must not start all-zero). */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** Mixes several integers (seed, epoch, index...) into one 32-bit seed, order-sensitive. */
export function mixSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const part of parts) {
    // Fold in the high bits too, so seeds beyond 2^32 still differ.
    const lo = part >>> 0;
    const hi = Math.floor(part / 0x100000000) >>> 0;
    for (const word of [lo, hi]) {
      h = Math.imul(h ^ word, 0x01000193) >>> 0;
      h = splitmix32(h)();
    }
  }
  return h >>> 0;
}

export class Rng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  private constructor(state: readonly number[]) {
    [this.#s0, this.#s1, this.#s2, this.#s3] = state.map((x) => x >>> 0) as [number, number, number, number];
  }

  /** A generator seeded from one or more integers (e.g. `Rng.seeded(seed, epoch)`). */
  static seeded(...seedParts: number[]): Rng {
    const next = splitmix32(mixSeed(...seedParts));
    return new Rng([next(), next(), next(), next()]);
  }

  /** Restores a generator from {@linkcode Rng.state}. */
  static fromState(state: readonly number[]): Rng {
    if (!Array.isArray(state) || state.length !== 4 || state.some((x) => !Number.isInteger(x) || x < 0)) {
      throw new TypeError(`rng state must be 4 non-negative 32-bit integers: got ${JSON.stringify(state)}`);
    }
    if (state.every((x) => x === 0)) throw new TypeError("rng state must not be all zero");
    return new Rng(state);
  }

  /** The state as 4 unsigned 32-bit integers; JSON-safe. */
  state(): number[] {
    // The xor-shift steps leave signed 32-bit values; the state is written unsigned.
    return [this.#s0 >>> 0, this.#s1 >>> 0, this.#s2 >>> 0, this.#s3 >>> 0];
  }

  /** The next 32 random bits as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** A float in [0, 1) with 32 bits of randomness (Python: `random()`). */
  random(): number {
    return this.nextUint32() / 0x100000000;
  }

  /** An integer in [lo, hi], both ends included (Python: `randint(lo, hi)`). Unbiased by rejection. */
  randint(lo: number, hi: number): number {
    const span = hi - lo + 1;
    if (!(span >= 1) || span > 0x100000000) throw new RangeError(`randint needs lo <= hi: got ${lo}, ${hi}`);
    if (span === 1) return lo;
    const limit = 0x100000000 - (0x100000000 % span);
    let x = this.nextUint32();
    while (x >= limit) x = this.nextUint32();
    return lo + (x % span);
  }

  /** Fisher-Yates shuffle in place (Python: `shuffle(list)`); returns the array. */
  shuffle<T>(items: T[] | Uint32Array | Int32Array): typeof items {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.randint(0, i);
      const tmp = items[i]!;
      items[i] = items[j]!;
      items[j] = tmp;
    }
    return items;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** A permutation of 0..n-1 drawn from `rng`. */
export function permutation(n: number, rng: Rng): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  rng.shuffle(order);
  return order;
}

/** Python 3 `round()`: halves go to the even neighbour (round(2.5) == 2), as the reference's count of predictions. */
export function pythonRound(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

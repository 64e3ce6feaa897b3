/**
 * Test fixtures for the trainer: a tiny vocabulary, a tiny config and a shard set of made-up but
 * well-formed instances written to a real store. Used by the trainer's tests and its bench; not by the
 * service itself.
 */
import type { ObjectStore } from "../shared/store/store.ts";
import { type PretrainInstance, Rng, ShardSetWriter } from "../shared/shards/mod.ts";
import { Sha256 } from "../shared/store/hash.ts";
import { publish } from "../shared/store/publish.ts";

export const TINY_VOCAB_SIZE = 99;
const SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/** vocab.txt with the BERT specials first (ids 0..4), then single characters. */
export function tinyVocabText(size = TINY_VOCAB_SIZE): string {
  const tokens = [...SPECIALS];
  for (let cp = 0x4e00; tokens.length < size; cp++) tokens.push(String.fromCodePoint(cp));
  return tokens.join("\n") + "\n";
}

/** A config.json small enough for a step in milliseconds, with odd sizes so swapped dimensions fail loudly. */
export function tinyConfigJson(overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    vocab_size: TINY_VOCAB_SIZE,
    hidden_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    intermediate_size: 36,
    max_position_embeddings: 32,
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    ...overrides,
  });
}

/** A packed row: one segment of a continuing run, full length, no next-sentence pair. */
function fakePackedInstance(rng: Rng, T: number): PretrainInstance {
  const original = new Uint32Array(T);
  const start = rng.randint(5, TINY_VOCAB_SIZE - 1);
  for (let i = 0; i < T; i++) original[i] = 5 + ((start + i) % (TINY_VOCAB_SIZE - 5));
  original[0] = 2;
  original[T - 1] = 3;
  const positions = Array.from({ length: T - 2 }, (_, i) => i + 1);
  rng.shuffle(positions);
  const masked = positions.slice(0, Math.round(T * 0.15)).sort((a, b) => a - b);
  const inputIds = original.slice();
  for (const p of masked) inputIds[p] = 4;
  return {
    inputIds,
    segmentALength: T,
    isRandomNext: false,
    maskedPositions: Uint16Array.from(masked),
    maskedLabels: Uint32Array.from(masked.map((p) => original[p]!)),
  };
}

function fakeInstance(rng: Rng, T: number): PretrainInstance {
  const lengthA = rng.randint(2, Math.floor((T - 3) / 2));
  const lengthB = rng.randint(2, T - 3 - lengthA);
  const length = lengthA + lengthB + 3;
  const original = new Uint32Array(length);
  // A learnable pattern: B continues A's arithmetic run when it is the true next segment.
  const start = rng.randint(5, TINY_VOCAB_SIZE - 1);
  const isRandomNext = rng.random() < 0.5;
  for (let i = 0; i < length; i++) original[i] = 5 + ((start + i) % (TINY_VOCAB_SIZE - 5));
  if (isRandomNext) {
    for (let i = lengthA + 2; i < length - 1; i++) original[i] = rng.randint(5, TINY_VOCAB_SIZE - 1);
  }
  original[0] = 2;
  original[lengthA + 1] = 3;
  original[length - 1] = 3;
  const candidates = Array.from({ length }, (_, i) => i).filter((i) => original[i]! >= 5);
  rng.shuffle(candidates);
  const positions = candidates.slice(0, Math.max(1, Math.round(length * 0.15))).sort((a, b) => a - b);
  const inputIds = original.slice();
  for (const p of positions) inputIds[p] = 4;
  return {
    inputIds,
    segmentALength: lengthA + 2,
    isRandomNext,
    maskedPositions: Uint16Array.from(positions),
    maskedLabels: Uint32Array.from(positions.map((p) => original[p]!)),
  };
}

/** Publishes vocab `name` and shard set `name` (count instances of up to T tokens) into the store. */
export async function writeTinyShards(
  store: ObjectStore,
  name: string,
  options: {
    count?: number;
    evalCount?: number;
    T?: number;
    seed?: number;
    maxShardBytes?: number;
    /** Full rows of one segment, as `shards build --packed` writes them (manifest settings.packed). */
    packed?: boolean;
  } = {},
): Promise<void> {
  const count = options.count ?? 256, T = options.T ?? 24;
  const vocabText = tinyVocabText();
  await publish(store, `vocabs/${name}`, { "vocab.txt": vocabText }, { overwrite: true });
  const rng = Rng.seeded(options.seed ?? 7);
  const make = options.packed ? fakePackedInstance : fakeInstance;
  const instances = Array.from({ length: count }, () => make(rng, T));
  const writer = await ShardSetWriter.create(store, name, {
    idBytes: 2,
    maxSeqLen: T,
    maxShardBytes: options.maxShardBytes ?? 4096,
    overwrite: true,
  });
  for (const instance of instances) await writer.addInstance(instance);
  for (let i = 0; i < (options.evalCount ?? 0); i++) await writer.addInstance(make(rng, T), "eval");
  await writer.finish({
    tokens: instances.reduce((s, x) => s + x.inputIds.length, 0),
    maskedTokens: instances.reduce((s, x) => s + x.maskedPositions.length, 0),
    randomNext: instances.filter((x) => x.isRandomNext).length,
    vocab: {
      name,
      sha256: new Sha256().update(vocabText).hex(),
      size: TINY_VOCAB_SIZE,
      padId: 0,
      clsId: 2,
      sepId: 3,
      maskId: 4,
    },
    corpus: {
      name: `${name}-corpus`,
      sha256: "0".repeat(64),
      bytes: 0,
      documents: count,
      sentences: 0,
      files: [],
    },
    settings: {
      maxSeqLength: T,
      maxPredictionsPerSeq: Math.ceil(T * 0.15),
      maskedLmProb: 0.15,
      shortSeqProb: 0.1,
      dupeFactor: 1,
      seed: options.seed ?? 7,
      wholeWordMask: false,
      randomNextProb: 0.5,
      blockBytes: 1 << 20,
      evalFraction: 0,
      maxShardBytes: options.maxShardBytes ?? 4096,
      ...(options.packed ? { packed: true } : {}),
    },
    builder: { name: "trainer-testing" },
  });
}

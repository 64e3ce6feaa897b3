/**
 * Does a pretrained model use word order? Held-out MLM accuracy with the instances as stored, and with each
 * segment's tokens shuffled (every masked label moves with its token). A model that has learned order loses much
 * of its accuracy on shuffled text; one still in the "bag of words" phase of MLM training loses almost nothing.
 *
 *   deno run -A tests/parity/reference/order_probe.ts STORE_DIR MODEL SHARD_SET
 *
 * 2026-11-25, tests/bench/trainer_quality.ts stores (bert-mini, ~800k characters of reviews and news): the
 * 8,000-step whole-word-masked model 17.2% in order vs 16.5% shuffled; a 6,000-step character-masked model
 * 16.5% vs 15.2%. Both are nearly order-blind, which is why pretraining gives NER (a task of neighbours)
 * nothing over a random init at this budget.
 */
import { LocalStore } from "../../../services/shared/store/local.ts";
import { loadModel } from "../../../services/trainer/models.ts";
import { createEngine } from "../../../services/shared/engine/select.ts";
import { InstanceStream, ShardSet } from "../../../services/shared/shards/reader.ts";
import { pretrainBatch } from "../../../services/shared/shards/batch.ts";
import { Rng } from "../../../services/shared/shards/rng.ts";
import type { PretrainInstance } from "../../../services/shared/shards/format.ts";

const [storeDir, modelName, shardSet] = Deno.args;
if (!shardSet) {
  console.error("usage: order_probe.ts STORE_DIR MODEL SHARD_SET");
  Deno.exit(2);
}
const store = new LocalStore(storeDir);
const model = await loadModel(store, { name: modelName! }, { head: { task: "pretrain" } });
const B = 16, T = model.config.max_position_embeddings >= 128 ? 128 : model.config.max_position_embeddings;
const engine = await createEngine({
  config: model.config,
  head: { task: "pretrain" },
  mode: "serve",
  maxBatch: B,
  maxSeqLen: T,
});
engine.setWeights(model.weights);
const set = await ShardSet.open(store, shardSet);
// The pretraining job's held-out instances: the eval split when the set has one, else the last shard's tail.
const instances: PretrainInstance[] = [];
if ((set.manifest.evalInstances ?? 0) >= B) {
  const stream = InstanceStream.over(set, { seed: 0, split: "eval", shuffle: false, maxEpochs: 1 });
  for (let x = await stream.next(); x && instances.length < 8 * B; x = await stream.next()) instances.push(x);
} else {
  const last = await set.loadShard(set.manifest.shards.length - 1);
  for (let i = Math.max(0, last.count - 8 * B); i < last.count; i++) instances.push(last.get(i));
}
const rng = Rng.seeded(7);
function shuffled(x: PretrainInstance): PretrainInstance {
  const L = x.inputIds.length;
  const from = Array.from({ length: L }, (_, i) => i); // position i now holds the token of position from[i]
  const shuffleRange = (lo: number, hi: number) => {
    for (let i = hi; i > lo; i--) {
      const j = lo + rng.randint(0, i - lo);
      [from[i], from[j]] = [from[j]!, from[i]!];
    }
  };
  shuffleRange(1, x.segmentALength - 2); // segment A between [CLS] and its [SEP]
  shuffleRange(x.segmentALength, L - 2); // segment B before the final [SEP]
  const to = new Map(from.map((p, i) => [p, i]));
  const masked = Array.from(x.maskedPositions, (p, k) => [to.get(p)!, x.maskedLabels[k]!])
    .sort((a, b) => a[0]! - b[0]!);
  return {
    ...x,
    inputIds: Uint32Array.from(from, (p) => x.inputIds[p]!),
    maskedPositions: Uint16Array.from(masked, (m) => m[0]!),
    maskedLabels: Uint32Array.from(masked, (m) => m[1]!),
  };
}
function mlmAccuracy(xs: PretrainInstance[]): number {
  let correct = 0, count = 0;
  for (let i = 0; i + B <= xs.length; i += B) {
    const stats = engine.evaluate(pretrainBatch(xs.slice(i, i + B), T, set.manifest.vocab.padId));
    correct += stats.mlmCorrect ?? 0;
    count += stats.mlmCount ?? 0;
  }
  return correct / count;
}
console.log(JSON.stringify({
  model: modelName,
  instances: instances.length,
  mlm_accuracy_in_order: mlmAccuracy(instances),
  mlm_accuracy_shuffled: mlmAccuracy(instances.map(shuffled)),
}));

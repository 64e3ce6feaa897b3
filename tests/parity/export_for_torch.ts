/**
 * Writes bertforge-saved model folders (saveModelDir, random weights) for PyTorch to load strictly:
 *
 *   deno run -A tests/parity/export_for_torch.ts /tmp/exported
 *   for d in /tmp/exported/*; do /usr/bin/python3 tests/parity/make_fixtures.py --check-saved $d; done
 *
 * One folder per head with a tiny config, and a bert-base-chinese shaped pretraining model (~400 MB).
 */
import { join } from "@std/path";
import type { HeadSpec } from "../../services/shared/engine/engine.ts";
import { initWeights, saveModelDir } from "../../services/shared/model/checkpoint.ts";
import { parseConfig } from "../../services/shared/model/config.ts";

const out = Deno.args[0] ?? "/tmp/bertforge-exported";
const tiny = parseConfig({
  vocab_size: 99,
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 37,
  max_position_embeddings: 16,
});
const heads: Record<string, HeadSpec> = {
  pretrain: { task: "pretrain" },
  classify: { task: "classify", numLabels: 3 },
  multilabel: { task: "multilabel", numLabels: 4 },
  ner_crf: { task: "ner", numLabels: 5, crf: true },
};
for (const [name, head] of Object.entries(heads)) {
  await saveModelDir(join(out, name), {
    config: tiny,
    head,
    weights: initWeights(tiny, head, 1),
    vocabText: "",
  });
}
const base = parseConfig(
  await Deno.readTextFile(new URL("../../../shared/data/bert-base-chinese/config.json", import.meta.url)),
);
await saveModelDir(join(out, "bert_base_chinese"), {
  config: base,
  head: { task: "pretrain" },
  weights: initWeights(base, { task: "pretrain" }, 1),
  vocabText: "",
});
console.log(`wrote ${Object.keys(heads).length + 1} model folders under ${out}`);

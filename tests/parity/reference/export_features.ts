/**
 * Writes the sentiment features of a trainer_quality store (the fine-tuning job's own 90/10 split of senti-train,
 * and senti-test) as JSON `[ids, label]` rows, for finetune_reference.py.
 * `deno run -A tests/parity/reference/export_features.ts STORE_DIR OUT.json`
 */
import { LocalStore } from "../../../services/shared/store/local.ts";
import { readDataset } from "../../../services/trainer/datasets.ts";
import {
  encodeTextExamples,
  LabelSet,
  type TextExample,
  trainEvalSplit,
} from "../../../services/shared/data/mod.ts";
import { WordPieceTokenizer } from "../../../services/shared/wordpiece/mod.ts";
const [storeDir, out] = Deno.args;
const store = new LocalStore(storeDir!);
const tok = WordPieceTokenizer.fromVocabText(await store.getText("vocabs/quality/vocab.txt"));
const train = (await readDataset(store, "senti-train", "classify")).examples as TextExample[];
const test = (await readDataset(store, "senti-test", "classify")).examples as TextExample[];
const split = trainEvalSplit(train, { evalFraction: 0.1, seed: 42 });
const labels = LabelSet.ofTextExamples([...split.train, ...split.eval]);
const enc = (xs: TextExample[]) =>
  encodeTextExamples(xs, tok, labels, { task: "classify", maxLength: 128 }).features.map((
    f,
  ) => [f.ids, f.label]);
await Deno.writeTextFile(
  out!,
  JSON.stringify({ train: enc(split.train), eval: enc(split.eval), test: enc(test) }),
);

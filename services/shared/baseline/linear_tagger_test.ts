import { assert, assertEquals, assertGreater, assertThrows } from "@std/assert";
import { mulberry32 } from "./linear.ts";
import { charClass, repairBio, trainLinearTagger } from "./linear_tagger.ts";
import { parseNerExamples } from "../data/formats.ts";
import { entityScores } from "../data/metrics.ts";

type Sentence = { chars: string[]; tags: string[] };

/**
 * Filler characters with entities that only their context marks: `在` NAME `里` is a LOC, `叫` NAME `的`
 * a PER, NAME one to three characters drawn from the same pool as the filler. So the tagger must use the
 * trigger (offset -1), the closer (offset +1) and its previous tag; the characters themselves say nothing.
 */
function synthetic(count: number, pool: string[], seed: number): Sentence[] {
  const random = mulberry32(seed);
  const pick = () => pool[Math.floor(random() * pool.length)]!;
  const sentences: Sentence[] = [];
  for (let s = 0; s < count; s++) {
    const chars: string[] = [];
    const tags: string[] = [];
    const filler = (n: number) => {
      for (let i = 0; i < n; i++) chars.push(pick()), tags.push("O");
    };
    filler(1 + Math.floor(random() * 4));
    for (let e = 0; e < 1 + Math.floor(random() * 3); e++) {
      const [open, close, type] = random() < 0.5 ? ["在", "里", "LOC"] : ["叫", "的", "PER"];
      chars.push(open), tags.push("O");
      const length = 1 + Math.floor(random() * 3);
      for (let i = 0; i < length; i++) chars.push(pick()), tags.push((i === 0 ? "B-" : "I-") + type);
      chars.push(close), tags.push("O");
      filler(1 + Math.floor(random() * 4));
    }
    sentences.push({ chars, tags });
  }
  return sentences;
}

const POOL = Array.from("天地人山水风云日月星花草木石金土火江河湖海春夏秋冬东西南北上下左右大小多少");
/** Characters that never occur in training. */
const UNSEEN = Array.from("甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥");

function f1(model: { predict(chars: string[]): string[] }, sentences: Sentence[]): number {
  return entityScores(sentences.map((s) => s.tags), sentences.map((s) => model.predict(s.chars))).f1;
}

/** No `I-X` that does not continue an `X` entity. */
function isValidBio(tags: string[]): boolean {
  return tags.every((tag, i) =>
    !tag.startsWith("I-") || [`B-${tag.slice(2)}`, tag].includes(tags[i - 1] ?? "O")
  );
}

Deno.test("trainLinearTagger() learns entities marked by their context to near-perfect F1", () => {
  const model = trainLinearTagger(synthetic(400, POOL, 1), { epochs: 4, buckets: 1 << 16 });
  assertEquals(model.labels, ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]);
  const score = f1(model, synthetic(200, POOL, 2));
  assert(score > 0.97, `entity F1 ${score}`);
  assertEquals(
    model.predict(Array.from("风在山水里云叫日月的")),
    "O O B-LOC I-LOC O O O B-PER I-PER O".split(" "),
  );
});

Deno.test("trainLinearTagger() tags characters it never saw from their context", () => {
  const model = trainLinearTagger(synthetic(400, POOL, 1), { epochs: 4, buckets: 1 << 16 });
  const unseen = synthetic(200, UNSEEN, 3);
  const score = f1(model, unseen);
  assert(score > 0.9, `entity F1 on unseen characters ${score}`);
  assertEquals(model.predict(Array.from("甲在乙丙里")), ["O", "O", "B-LOC", "I-LOC", "O"]);
  // Characters of no kind seen in training, and the empty sentence, still get one valid tag each.
  for (const chars of [Array.from("ABC123😀"), ["word", "level"], []]) {
    const tags = model.predict(chars);
    assertEquals(tags.length, chars.length);
    assert(tags.every((t) => model.labels.includes(t)) && isValidBio(tags), tags.join(" "));
  }
});

Deno.test("trainLinearTagger() is deterministic for a seed", () => {
  const train = synthetic(100, POOL, 4);
  const test = synthetic(50, [...POOL.slice(0, 10), ...UNSEEN.slice(0, 10)], 5);
  const a = trainLinearTagger(train, { seed: 3, epochs: 2, buckets: 1 << 12 });
  const b = trainLinearTagger(train, { seed: 3, epochs: 2, buckets: 1 << 12 });
  assertEquals(test.map((s) => a.predict(s.chars)), test.map((s) => b.predict(s.chars)));
});

Deno.test("trainLinearTagger() refuses empty data and misaligned tags", () => {
  assertThrows(() => trainLinearTagger([]), RangeError, "no tagged characters");
  assertThrows(() => trainLinearTagger([{ chars: [], tags: [] }]), RangeError, "no tagged characters");
  assertThrows(() => trainLinearTagger([{ chars: ["a", "b"], tags: ["O"] }]), RangeError, "sentence 0");
});

Deno.test("repairBio() opens an entity where seqeval would read one, and keeps valid BIO", () => {
  assertEquals(
    repairBio(["I-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-LOC", "I-LOC"]),
    "B-PER I-PER O B-LOC B-ORG B-LOC I-LOC".split(" "),
  );
  const valid = ["O", "B-LOC", "I-LOC", "B-LOC", "B-PER", "I-PER", "O"];
  assertEquals(repairBio(valid), valid);
});

Deno.test("trainLinearTagger() answers valid BIO even when trained on IO tags", () => {
  // Every entity tagged I- only: the raw predictions are I-X after O, which predict() must repair.
  const io = synthetic(300, POOL, 6).map((s) => ({ ...s, tags: s.tags.map((t) => t.replace(/^B-/, "I-")) }));
  const model = trainLinearTagger(io, { epochs: 3, buckets: 1 << 16 });
  assertEquals(model.labels, ["I-LOC", "I-PER", "O"]);
  assertEquals(
    model.predict(Array.from("风在山水里云叫日月的")),
    "O O B-LOC I-LOC O O O B-PER I-PER O".split(" "),
  );
});

Deno.test("charClass() tells digits, Latin letters, CJK and punctuation apart", () => {
  assertEquals(
    ["7", "７", "a", "Ｚ", "中", "二", "，", "!", "😀"].map(charClass),
    "d d l l h n p p p".split(" "),
  );
});

const PEOPLES_DAILY = new URL("../../../../shared/data/peoples-daily-ner/", import.meta.url);
const hasPeoplesDaily = await Deno.stat(new URL("train.bio", PEOPLES_DAILY)).then(() => true, () => false) &&
  await Deno.stat(new URL("dev.bio", PEOPLES_DAILY)).then(() => true, () => false);
if (!hasPeoplesDaily) {
  console.warn(
    `linear_tagger_test: skipping the People's Daily test: ${PEOPLES_DAILY.pathname}{train,dev}.bio absent`,
  );
}

Deno.test({
  name: "trainLinearTagger() trained on People's Daily train.bio reaches entity F1 > 0.5 on dev.bio",
  ignore: !hasPeoplesDaily,
  fn: async () => {
    const read = async (name: string) =>
      parseNerExamples(await Deno.readTextFile(new URL(name, PEOPLES_DAILY)), { file: name, format: "bio" })
        .map((e) => ({ chars: e.units, tags: e.tags }));
    const [train, dev] = [await read("train.bio"), await read("dev.bio")];
    const model = trainLinearTagger(train, { epochs: 3 });
    const predicted = dev.map((s) => model.predict(s.chars));
    assert(predicted.every(isValidBio));
    const scores = entityScores(dev.map((s) => s.tags), predicted);
    assertGreater(scores.f1, 0.5, `entity F1 ${scores.f1}`);
    for (const type of ["LOC", "ORG", "PER"]) assertGreater(scores.perType[type]!.f1, 0.3, type);
  },
});

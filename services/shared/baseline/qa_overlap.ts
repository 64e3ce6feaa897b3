/**
 * The floor every BERT QA result is reported against, as the linear models are for classification and NER: a
 * non-neural reader with no training, the sliding-window idea of Richardson et al.'s MCTest baseline cut down to
 * spans.
 *
 * 1. Sentence: the context's sentence (cut at 。！？!? and newlines) holding the most question characters,
 *    each weighted by its rarity among the context's sentences (log(1 + S / (1 + df))), so a name counts more
 *    than 的. Question words (什麼, 哪, 誰, 何, 幾, 多少, 怎 ...) are no evidence and are left out.
 * 2. Anchor: the longest run of question characters the sentence repeats (the part of the question the
 *    sentence restates).
 * 3. Span: the question word stands where the answer goes. When it comes after the anchor in the question
 *    ("梵語的發展可以考察什麼文本？"), the answer is the sentence after the anchor (and after the clause marks and
 *    question characters right next to it) up to the next clause mark (，、；：); when before ("誰發明了電話？"),
 *    likewise before the anchor. An empty side falls back to the other, then to the sentence's first clause.
 *
 * Deterministic, no dependencies. `deno run -A services/shared/baseline/qa_overlap.ts FILE.jsonl` scores a QA
 * file with the CMRC 2018 metric and prints one JSON line.
 *
 * @module
 */
import { readQaFile } from "../data/qa.ts";
import { qaScores } from "../data/qa_metric.ts";

/** Characters of question words (traditional and simplified): they mark the answer's place, not evidence. */
const QUESTION_CHARS = new Set(Array.from("什麼么哪誰谁何幾几多少怎呢嗎吗？?"));
const QUESTION_WORDS = /什麼|什么|甚麼|哪|誰|谁|何|幾|几|多少|怎/u;
const SENTENCE_END = new Set(Array.from("。！？!?\n"));
const CLAUSE_MARK = new Set(Array.from('，、；：,;:「」『』（）()《》“”"。！？!?\n'));

export interface OverlapAnswer {
  text: string;
  /** [start, end) in code points of the context. */
  start: number;
  end: number;
}

/** Sentences of a context as [start, end) code point ranges, ending marks included. */
function sentences(chars: string[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let from = 0;
  chars.forEach((c, i) => {
    if (SENTENCE_END.has(c)) {
      out.push([from, i + 1]);
      from = i + 1;
    }
  });
  if (from < chars.length) out.push([from, chars.length]);
  return out;
}

/** Longest run of `question` (code points) found in `text`: [question start, text start, length]. */
function longestAnchor(question: string[], text: string[]): [number, number, number] {
  let best: [number, number, number] = [0, 0, 0];
  let previous = new Int32Array(text.length + 1), current = new Int32Array(text.length + 1);
  for (let i = 0; i < question.length; i++) {
    for (let j = 0; j < text.length; j++) {
      const same = question[i] === text[j] && !QUESTION_CHARS.has(question[i]!) &&
        !CLAUSE_MARK.has(question[i]!);
      current[j + 1] = same ? previous[j]! + 1 : 0;
      if (current[j + 1]! > best[2]) {
        best = [i + 1 - current[j + 1]!, j + 1 - current[j + 1]!, current[j + 1]!];
      }
    }
    [previous, current] = [current, previous];
  }
  return best;
}

/** The baseline's answer to one question, cut from the context. */
export function overlapAnswer(question: string, context: string): OverlapAnswer {
  const chars = Array.from(context), q = Array.from(question);
  const spans = sentences(chars);
  const df = new Map<string, number>();
  for (const [s, e] of spans) for (const c of new Set(chars.slice(s, e))) df.set(c, (df.get(c) ?? 0) + 1);
  const evidence = [...new Set(q)].filter((c) =>
    !QUESTION_CHARS.has(c) && !CLAUSE_MARK.has(c) && c.trim() !== ""
  );
  let bestSentence = spans[0]!, bestScore = -1;
  for (const span of spans) {
    const present = new Set(chars.slice(span[0], span[1]));
    let score = 0;
    for (const c of evidence) {
      if (present.has(c)) score += Math.log(1 + spans.length / (1 + (df.get(c) ?? 0)));
    }
    if (score > bestScore) [bestSentence, bestScore] = [span, score];
  }
  const [s0, s1] = bestSentence;
  const sentence = chars.slice(s0, s1);
  const [qAt, sAt, length] = longestAnchor(q, sentence);
  // the restatement may go on past the anchor ("梵語的發展，可以考察"): skip clause marks and question
  // characters next to it, then take the clause part that follows (or precedes)
  const restated = (c: string) => CLAUSE_MARK.has(c) || evidence.includes(c);
  const after = (from: number): [number, number] => {
    while (from < sentence.length && restated(sentence[from]!)) from++;
    let to = from;
    while (to < sentence.length && !CLAUSE_MARK.has(sentence[to]!)) to++;
    return [from, to];
  };
  const before = (to: number): [number, number] => {
    while (to > 0 && restated(sentence[to - 1]!)) to--;
    let from = to;
    while (from > 0 && !CLAUSE_MARK.has(sentence[from - 1]!)) from--;
    return [from, to];
  };
  const word = QUESTION_WORDS.exec(question);
  const wordAt = word ? Array.from(question.slice(0, word.index)).length : q.length;
  let range: [number, number] = [0, 0];
  if (length > 0) {
    const sides = wordAt >= qAt + length
      ? [after(sAt + length), before(sAt)]
      : [before(sAt), after(sAt + length)];
    range = sides.find(([a, b]) => b > a) ?? [0, 0];
  }
  if (range[1] <= range[0]) range = after(0);
  const [a, b] = range;
  return { text: sentence.slice(a, b).join(""), start: s0 + a, end: s0 + b };
}

if (import.meta.main) {
  const file = Deno.args[0];
  if (!file) {
    console.error("usage: deno run -A services/shared/baseline/qa_overlap.ts FILE.jsonl|FILE.json");
    Deno.exit(2);
  }
  const { examples } = await readQaFile(file);
  const scores = qaScores(
    examples.map((e) => ({ golds: e.goldTexts, prediction: overlapAnswer(e.question, e.context).text })),
  );
  console.log(JSON.stringify({ baseline: "qa_overlap", file, ...scores }));
}

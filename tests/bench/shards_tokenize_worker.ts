/**
 * Helper of the shards bench: encodes every line of a byte range of a corpus file with the WordPiece
 * tokenizer (as the tokenize bench does) and reports the number of text tokens, so the bench can compare
 * the sharding throughput with the tokenizer's on the same text and the same number of threads.
 */
/// <reference lib="deno.worker" />
import { WordPieceTokenizer } from "../../services/shared/wordpiece/mod.ts";

self.onmessage = async (
  event: MessageEvent<{ vocabText: string; path: string; from: number; to: number }>,
) => {
  const { vocabText, path, from, to } = event.data;
  const tokenizer = WordPieceTokenizer.fromVocabText(vocabText);
  using file = await Deno.open(path);
  await file.seek(from, Deno.SeekMode.Start);
  const bytes = new Uint8Array(to - from);
  let read = 0;
  while (read < bytes.length) {
    const n = await file.read(bytes.subarray(read));
    if (n === null) break;
    read += n;
  }
  const started = performance.now();
  let tokens = 0;
  for (const line of new TextDecoder().decode(bytes.subarray(0, read)).split("\n")) {
    if (line.trim() === "") continue;
    tokens += tokenizer.encode(line).ids.length - 2; // text tokens, without [CLS]/[SEP]
  }
  self.postMessage({ tokens, ms: performance.now() - started });
};

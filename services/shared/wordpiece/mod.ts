/**
 * WordPiece for BERT: Hugging Face `BertTokenizerFast` semantics in TypeScript, and a vocabulary trainer.
 *
 * ```ts
 * import { WordPieceTokenizer } from "./mod.ts";
 * const tokenizer = WordPieceTokenizer.fromVocabText(Deno.readTextFileSync("vocab.txt"), { lowercase: true });
 * tokenizer.encode("你好，BERT!").ids; // [101, 872, 1962, 8024, 8815, 8716, 106, 102]
 * ```
 */
export * from "./wordpiece.ts";
export * from "./vocab.ts";
export type { BasicOptions } from "./basic.ts";
export * from "./trainer.ts";
export * from "./artifact.ts";

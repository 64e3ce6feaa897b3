/**
 * A build worker: holds a tokenizer (and jieba for whole-word masking) and turns blocks of documents
 * into encoded records (block.ts). Messages: `init` once, then `block`s; every reply carries the block
 * index, since the builder writes blocks in index order whatever order they finish in.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import { type BlockSettings, BlockWorkspace, processBlock } from "./block.ts";

export type WorkerRequest =
  | { type: "init"; vocabText: string; lowercase: boolean; settings: BlockSettings; idBytes: 2 | 4 }
  | { type: "block"; index: number; documents: string[][] };

let tokenizer: WordPieceTokenizer | null = null;
let settings: BlockSettings | null = null;
let idBytes: 2 | 4 = 2;
let workspace: BlockWorkspace | null = null;

let ready: Promise<void> = Promise.resolve();

self.onmessage = async (event: MessageEvent<WorkerRequest>) => {
  const message = event.data;
  try {
    if (message.type === "init") {
      tokenizer = WordPieceTokenizer.fromVocabText(message.vocabText, { lowercase: message.lowercase });
      settings = message.settings;
      idBytes = message.idBytes;
      ready = BlockWorkspace.create(tokenizer, settings, idBytes).then((created) => {
        workspace = created;
      });
      await ready;
      return;
    }
    await ready;
    if (!tokenizer || !settings || !workspace) throw new Error("build worker got a block before init");
    const result = processBlock(message.index, message.documents, tokenizer, settings, workspace);
    self.postMessage({ type: "result", result }, [
      result.train.records.buffer as ArrayBuffer,
      result.train.offsets.buffer as ArrayBuffer,
      result.eval.records.buffer as ArrayBuffer,
      result.eval.offsets.buffer as ArrayBuffer,
    ]);
  } catch (error) {
    const index = message.type === "block" ? message.index : -1;
    self.postMessage({ type: "error", index, message: (error as Error)?.stack ?? String(error) });
  }
};

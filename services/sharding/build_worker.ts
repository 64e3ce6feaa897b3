/**
 * A build worker: holds a tokenizer (and jieba for whole-word masking) and turns blocks of documents
 * into encoded records (block.ts). Messages: `init` once, then `block`s; every reply carries the block
 * index, since the builder writes blocks in index order whatever order they finish in.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import { InvalidArgument } from "../shared/errors.ts";
import {
  type BlockResult,
  type BlockSettings,
  BlockWorkspace,
  documentsOf,
  processBlock,
  type RawBlock,
} from "./block.ts";

export type WorkerRequest =
  | { type: "init"; vocabText: string; lowercase: boolean; settings: BlockSettings }
  | { type: "block"; index: number; block: RawBlock };

export type WorkerReply =
  | { type: "result"; result: BlockResult }
  | { type: "error"; index: number; message: string; invalidArgument: boolean };

let tokenizer: WordPieceTokenizer | null = null;
let settings: BlockSettings | null = null;
let workspace: BlockWorkspace | null = null;

let ready: Promise<void> = Promise.resolve();

self.onmessage = async (event: MessageEvent<WorkerRequest>) => {
  const message = event.data;
  try {
    if (message.type === "init") {
      tokenizer = WordPieceTokenizer.fromVocabText(message.vocabText, { lowercase: message.lowercase });
      settings = message.settings;
      ready = BlockWorkspace.create(tokenizer, settings).then((created) => {
        workspace = created;
      });
      await ready;
      return;
    }
    await ready;
    if (!tokenizer || !settings || !workspace) throw new Error("build worker got a block before init");
    const block = message.block;
    const result = processBlock(message.index, documentsOf(block), tokenizer, settings, workspace, block);
    const reply: WorkerReply = { type: "result", result };
    self.postMessage(reply, [
      result.train.records.buffer as ArrayBuffer,
      result.train.offsets.buffer as ArrayBuffer,
      result.eval.records.buffer as ArrayBuffer,
      result.eval.offsets.buffer as ArrayBuffer,
    ]);
  } catch (error) {
    const index = message.type === "block" ? message.index : -1;
    const invalidArgument = error instanceof InvalidArgument;
    const reply: WorkerReply = {
      type: "error",
      index,
      message: invalidArgument ? error.message : (error as Error)?.stack ?? String(error),
      invalidArgument,
    };
    self.postMessage(reply);
  }
};

/**
 * The operations of InferenceService, independent of the transport (TEI's core/src/infer.rs): validate a
 * request, tokenize, queue the inputs on the batcher, and turn the model's outputs into the proto's result
 * messages. service.ts (gRPC) and http.ts (HTTP/JSON) are thin front ends over this file; both take and give
 * the proto's field names (`text_pair`, `top_k`), so an HTTP body is the gRPC request as JSON.
 *
 * Every operation answers `{response, timing}`: the response message, and the queue/inference/tokenize
 * milliseconds that http.ts puts in `x-queue-time` / `x-inference-time` headers (as TEI does).
 *
 * Letters: T tokens of one input, K labels, C hidden, V vocab, P masked positions.
 */
import { FailedPrecondition, InvalidArgument } from "../shared/errors.ts";
import { checkText, isBlank, PayloadTooLarge, TextBudget } from "../shared/text/input.ts";
import { stitchWindows, type TokenSpan, tokenWindows, windowPass } from "../shared/data/windows.ts";
import { headUsesPooler } from "../shared/engine/engine.ts";
import { type CrfParams, viterbiAcrossWindows } from "../shared/model/crf.ts";
import type { Encoding } from "../shared/wordpiece/mod.ts";
import type { Batcher, InferenceInput, InferenceOutput } from "./batcher.ts";
import type { ModelInstance, Registry } from "./registry.ts";

// deno-lint-ignore no-explicit-any
export type Message = Record<string, any>;

export interface Timing {
  queueMs: number;
  inferenceMs: number;
  tokenizeMs: number;
}

export interface Answer {
  response: Message;
  timing: Timing;
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Epoch milliseconds. */
  deadline?: number;
}

export interface InferenceLimits {
  /** Most inputs in one batch request (texts, pairs, inputs). */
  maxClientBatchSize: number;
}

export type TruncationName =
  | "TRUNCATION_UNSPECIFIED"
  | "TRUNCATION_NONE"
  | "TRUNCATION_LONGEST_FIRST"
  | "TRUNCATION_ONLY_FIRST"
  | "TRUNCATION_ONLY_SECOND";

const TRUNCATIONS: TruncationName[] = [
  "TRUNCATION_UNSPECIFIED",
  "TRUNCATION_NONE",
  "TRUNCATION_LONGEST_FIRST",
  "TRUNCATION_ONLY_FIRST",
  "TRUNCATION_ONLY_SECOND",
];
const POOLINGS = ["POOLING_UNSPECIFIED", "POOLING_CLS", "POOLING_MEAN", "POOLING_POOLER"] as const;
const PADDINGS = ["PADDING_UNSPECIFIED", "PADDING_LONGEST", "PADDING_MAX_LENGTH"] as const;

// ------------------------------------------------------------------------------------------ field checks

function isObject(value: unknown): value is Message {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** The request's sub-message at `field` (absent → {}); anything but an object is an InvalidArgument. */
export function messageField(value: unknown, field: string): Message {
  if (value === undefined || value === null) return {};
  if (!isObject(value)) throw new InvalidArgument(`${field} must be an object`);
  return value;
}

export function stringField(value: unknown, field: string): string {
  if (value === undefined || value === null) return "";
  if (typeof value !== "string") throw new InvalidArgument(`${field} must be a string: got ${typeof value}`);
  return value;
}

/**
 * A text to run the model on, checked as every service checks texts (services/shared/text/input.ts): size,
 * UTF-8, and not blank (whitespace and control characters alone leave the model nothing to read).
 */
function textField(value: unknown, field: string, budget: TextBudget): string {
  const text = checkText(stringField(value, field), field, budget);
  if (isBlank(text)) {
    throw new InvalidArgument(
      `${field} is empty (or only whitespace and control characters): send the text to run the model on`,
    );
  }
  return text;
}

function arrayField(value: unknown, field: string): unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new InvalidArgument(`${field} must be a list`);
  return value;
}

function boolField(value: unknown, field: string, fallback: boolean): boolean {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "boolean") throw new InvalidArgument(`${field} must be true or false`);
  return value;
}

function numberField(value: unknown, field: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isFinite(n)) throw new InvalidArgument(`${field} must be a number`);
  return n;
}

function uintField(value: unknown, field: string): number {
  const n = numberField(value, field) ?? 0;
  if (!Number.isInteger(n) || n < 0) {
    throw new InvalidArgument(`${field} must be a non-negative integer: got ${n}`);
  }
  return n;
}

/** An enum given by name (`TRUNCATION_NONE`), short name (`none`) or number (1). */
export function enumField<T extends string>(value: unknown, names: readonly T[], field: string): T {
  if (value === undefined || value === null || value === "") return names[0]!;
  if (typeof value === "number" && Number.isInteger(value) && names[value]) return names[value]!;
  if (typeof value === "string") {
    const prefix = names[0]!.replace(/UNSPECIFIED$/, "");
    const upper = value.toUpperCase();
    const match = names.find((n) => n === upper || n === `${prefix}${upper}`);
    if (match) return match;
  }
  throw new InvalidArgument(`${field} must be one of ${names.join(", ")}: got ${JSON.stringify(value)}`);
}

// ------------------------------------------------------------------------------------------ tokenizing

export interface Encoded {
  encoding: Encoding;
  truncated: boolean;
}

/**
 * Encodes one input for a model: empty text is an InvalidArgument; over `maxLength` tokens it is cut by the
 * strategy (the default `longest_first`) and marked truncated, or refused with TRUNCATION_NONE.
 */
export function encodeInput(
  instance: Pick<ModelInstance, "tokenizer" | "name">,
  text: string,
  pair: string | undefined,
  maxLength: number,
  truncation: TruncationName,
  field: string,
  addSpecialTokens = true,
): Encoded {
  // The tokenizer stops after maxLength + 1 tokens, so a long text costs time in proportion to maxLength,
  // not to its own length: one token past the limit is enough to know it must be cut.
  const probe = instance.tokenizer.encode(text, pair, {
    maxLength: maxLength + 1,
    truncation: true,
    addSpecialTokens,
  });
  if (probe.ids.length <= maxLength) return { encoding: probe, truncated: false };
  if (truncation === "TRUNCATION_NONE") {
    throw new InvalidArgument(
      `${field} is more than ${maxLength} tokens, the most model ${instance.name} takes ` +
        `(truncation is TRUNCATION_NONE; leave it unset to truncate)`,
    );
  }
  if (
    pair === undefined || truncation === "TRUNCATION_LONGEST_FIRST" || truncation === "TRUNCATION_UNSPECIFIED"
  ) {
    // The tokenizer's own longest_first, so the cut matches Hugging Face exactly.
    const cut = instance.tokenizer.encode(text, pair, { maxLength, truncation: true, addSpecialTokens });
    return { encoding: cut, truncated: true };
  }
  // only_first / only_second need the whole length of the segment kept: bounded by MAX_TEXT_BYTES.
  const encoding = instance.tokenizer.encode(text, pair, { truncation: false, addSpecialTokens });
  const special = addSpecialTokens ? 3 : 0;
  const budget = maxLength - special;
  if (budget < 0) throw new InvalidArgument(`max_length ${maxLength} leaves no room for the special tokens`);
  const isReal = (i: number) => encoding.specialTokensMask[i] === 0;
  const first: number[] = [], second: number[] = [];
  encoding.typeIds.forEach((typeId, i) => {
    if (isReal(i)) (typeId === 0 ? first : second).push(i);
  });
  let k1 = first.length, k2 = second.length;
  if (truncation === "TRUNCATION_ONLY_FIRST") {
    k1 = budget - k2;
  } else {
    k2 = budget - k1;
  }
  if (k1 < 0 || k2 < 0) {
    throw new InvalidArgument(
      `${field} cannot be cut to ${maxLength} tokens with ${truncation}: the other segment alone is too long`,
    );
  }
  const keep = new Set([...first.slice(0, k1), ...second.slice(0, k2)]);
  const out: Encoding = {
    ids: [],
    tokens: [],
    typeIds: [],
    offsets: [],
    attentionMask: [],
    specialTokensMask: [],
  };
  encoding.ids.forEach((id, i) => {
    if (!isReal(i) || keep.has(i)) {
      out.ids.push(id);
      out.tokens.push(encoding.tokens[i]!);
      out.typeIds.push(encoding.typeIds[i]!);
      out.offsets.push(encoding.offsets[i]!);
      out.attentionMask.push(1);
      out.specialTokensMask.push(encoding.specialTokensMask[i]!);
    }
  });
  out.overflowed = true;
  return { encoding: out, truncated: true };
}

/**
 * A Tag input, or a Classify input of a model fine-tuned with windows: its encoding and, when it is longer
 * than the model takes, the windows it runs as.
 */
export interface WindowedInput extends Encoded {
  /** Over the encoding's tokens between [CLS] and [SEP], as fine-tuning cut its long sentences. */
  windows?: TokenSpan[];
}

/**
 * Encodes one Tag input, or one Classify input of a model fine-tuned with windows. A text longer than the
 * model takes is read whole through overlapping windows (tokenWindows over `maxLength - 2` tokens, as
 * fine-tuning trained and evaluated on them) under
 * TRUNCATION_UNSPECIFIED and TRUNCATION_NONE alike: nothing is cut, so there is nothing for NONE to refuse.
 * A cutting strategy named explicitly (TRUNCATION_LONGEST_FIRST, ...) cuts it to one pass as encodeInput does,
 * for callers who want only the start of a text at the cost of one pass, and the result says `truncated`.
 */
export function encodeWindowedInput(
  instance: Pick<ModelInstance, "tokenizer" | "name" | "maxLength">,
  text: string,
  truncation: TruncationName,
  field: string,
): WindowedInput {
  if (truncation !== "TRUNCATION_UNSPECIFIED" && truncation !== "TRUNCATION_NONE") {
    return encodeInput(instance, text, undefined, instance.maxLength, truncation, field);
  }
  const encoding = instance.tokenizer.encode(text, undefined, { truncation: false });
  if (encoding.ids.length <= instance.maxLength) return { encoding, truncated: false };
  return {
    encoding,
    truncated: false,
    windows: tokenWindows(encoding.ids.length - 2, instance.maxLength - 2),
  };
}

/** The model passes of an input: its encoding, or `[CLS] window [SEP]` for each of its windows. */
function windowPasses(input: WindowedInput): InferenceInput[] {
  const { ids, typeIds } = input.encoding;
  if (!input.windows) return [{ ids, typeIds }];
  const inner = ids.slice(1, -1);
  return input.windows.map((span) => windowPass(inner, span, ids[0]!, ids.at(-1)!));
}

/**
 * The outputs of a windowed Tag input's passes as one output over its whole encoding: each token's logits
 * from the window where it has the most context (stitchWindows, as evaluation does); with the model's `crf`,
 * the tags are one Viterbi path over those stitched emissions (viterbiAcrossWindows, as evaluation decodes),
 * without it each token's CRF tag comes from its window like its logits.
 */
export function stitchTagOutputs(
  input: WindowedInput,
  outputs: readonly InferenceOutput[],
  crf?: CrfParams,
): InferenceOutput {
  const windows = input.windows!;
  const T = input.encoding.ids.length;
  const K = outputs[0]!.logits.length / (windows[0]!.end - windows[0]!.start + 2);
  // Row 0 of each pass is its [CLS]: a window's token i is the pass's row i + 1.
  const inner = (w: number) => windows[w]!.end - windows[w]!.start;
  const logits = new Float32Array(T * K); // (T, K); the [CLS]/[SEP] rows stay 0, tagging skips them
  stitchWindows(
    windows,
    outputs.map((o, w) => o.logits.subarray(K, (1 + inner(w)) * K)),
    K,
    logits.subarray(K, (T - 1) * K),
  );
  const output: InferenceOutput = {
    logits,
    queueMs: Math.max(...outputs.map((o) => o.queueMs)),
    inferenceMs: Math.max(...outputs.map((o) => o.inferenceMs)),
    batchSize: Math.max(...outputs.map((o) => o.batchSize)),
  };
  if (outputs[0]!.paths && crf) {
    const last = outputs.at(-1)!.logits, lastSep = 1 + inner(windows.length - 1);
    output.paths = new Int32Array(T).fill(-1);
    output.paths.set(
      viterbiAcrossWindows(
        outputs[0]!.logits.subarray(0, K),
        logits.subarray(K, (T - 1) * K),
        last.subarray(lastSep * K, (lastSep + 1) * K),
        K,
        crf,
      ),
      1,
    );
  } else if (outputs[0]!.paths) {
    output.paths = new Int32Array(T);
    stitchWindows(
      windows,
      outputs.map((o, w) => o.paths!.subarray(1, 1 + inner(w))),
      1,
      output.paths.subarray(1, T - 1),
    );
  }
  return output;
}

// ------------------------------------------------------------------------------------------ math

function softmax(values: ArrayLike<number>, from = 0, length = values.length): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, values[from + i]!);
  const out = new Float64Array(length);
  let sum = 0;
  for (let i = 0; i < length; i++) sum += out[i] = Math.exp(values[from + i]! - max);
  for (let i = 0; i < length; i++) out[i]! /= sum;
  return out;
}

function logSumExp(values: ArrayLike<number>, from: number, length: number): number {
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, values[from + i]!);
  let sum = 0;
  for (let i = 0; i < length; i++) sum += Math.exp(values[from + i]! - max);
  return max + Math.log(sum);
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

function codePoints(text: string): string[] {
  return Array.from(text);
}

// ------------------------------------------------------------------------------------------ the service core

type Task = ModelInstance["head"]["task"];
/** One input text and the request field it came from (for error messages). */
type TextItem = { text: string; field: string };
/** What every operation's run returns: the model it ran on, one result per input, and timings. */
type Run = { instance: ModelInstance; results: Message[]; timing: Timing };

export class Inference {
  constructor(
    readonly registry: Registry,
    readonly batcher: Batcher,
    readonly limits: InferenceLimits = { maxClientBatchSize: 64 },
  ) {}

  #modelRef(instance: ModelInstance): Message {
    return { name: instance.name, version: instance.version };
  }

  #requireHead(instance: ModelInstance, method: string, tasks: Task[], what: string): void {
    if (!tasks.includes(instance.head.task)) {
      throw new FailedPrecondition(
        `${method} needs ${what}; model ${instance.name} is a ${instance.head.task} model (heads: ${
          instance.heads.join(", ") || "none"
        })`,
      );
    }
  }

  #requireMlm(instance: ModelInstance, method: string): void {
    if (!instance.heads.includes("mlm")) {
      throw new FailedPrecondition(
        `${method} needs the masked-LM head of a pretrained model; model ${instance.name} is a ${instance.head.task} model (heads: ${
          instance.heads.join(", ") || "none"
        })`,
      );
    }
  }

  #batchList(value: unknown, field: string): unknown[] {
    const items = arrayField(value, field);
    if (items.length === 0) throw new InvalidArgument(`${field} is empty: send at least one input`);
    if (items.length > this.limits.maxClientBatchSize) {
      throw new PayloadTooLarge(
        `${field} has ${items.length} inputs; at most ${this.limits.maxClientBatchSize} per request (--max-client-batch-size)`,
      );
    }
    return items;
  }

  /** Runs inputs through the batcher and collects the timing. */
  async #run(
    instance: ModelInstance,
    inputs: InferenceInput[],
    call: CallOptions,
    tokenizeMs: number,
  ): Promise<{ outputs: InferenceOutput[]; timing: Timing }> {
    const outputs = await this.batcher.submit(instance, inputs, {
      ...(call.signal ? { signal: call.signal } : {}),
      ...(call.deadline !== undefined ? { deadline: call.deadline } : {}),
    });
    const timing: Timing = { queueMs: 0, inferenceMs: 0, tokenizeMs };
    for (const o of outputs) {
      timing.queueMs = Math.max(timing.queueMs, o.queueMs);
      timing.inferenceMs = Math.max(timing.inferenceMs, o.inferenceMs);
    }
    return { outputs, timing };
  }

  // ---- Classify / ClassifyPair

  async #classify(
    request: Message,
    call: CallOptions,
    method: string,
    inputs: Array<{ text: string; pair?: string; field: string }>,
  ): Promise<{ instance: ModelInstance; results: Message[]; timing: Timing }> {
    const options = messageField(request.options, "options");
    const truncation = enumField(options.truncation, TRUNCATIONS, "options.truncation");
    const threshold = numberField(options.threshold, "options.threshold");
    if (threshold !== undefined && !(threshold >= 0 && threshold <= 1)) {
      throw new InvalidArgument(`options.threshold must be in [0, 1]: got ${threshold}`);
    }
    const returnLogits = boolField(options.return_logits, "options.return_logits", true);
    return await this.registry.use(this.#ref(request), async (instance) => {
      this.#requireHead(
        instance,
        method,
        ["classify", "multilabel", "pair"],
        "a sequence classification head",
      );
      const started = performance.now();
      const encoded: WindowedInput[] = inputs.map((input) =>
        instance.windows && input.pair === undefined
          ? encodeWindowedInput(instance, input.text, truncation, input.field)
          : encodeInput(instance, input.text, input.pair, instance.maxLength, truncation, input.field)
      );
      const passes = this.#passes(method, instance, encoded);
      const { outputs, timing } = await this.#run(instance, passes.flat(), call, performance.now() - started);
      const multi = instance.head.task === "multilabel";
      const cut = (k: number) => threshold ?? instance.thresholds[k] ?? 0.5;
      let next = 0;
      const results = encoded.map((_, i) => {
        // A windowed text's logits are the mean of its windows' (as fine-tuning evaluated it).
        const mine = outputs.slice(next, next += passes[i]!.length);
        const logits = mine[0]!.logits.map((_, k) =>
          mine.reduce((sum, o) => sum + o.logits[k]!, 0) / mine.length
        );
        const probabilities = multi ? Array.from(logits, sigmoid) : Array.from(softmax(logits));
        const labelOf = (k: number) => instance.labels[k] ?? `LABEL_${k}`;
        let labels: string[];
        if (multi) {
          labels = probabilities.flatMap((p, k) => (p >= cut(k) ? [labelOf(k)] : []));
        } else {
          let best = 0;
          probabilities.forEach((p, k) => {
            if (p > probabilities[best]!) best = k;
          });
          labels = [labelOf(best)];
        }
        return {
          label: labels[0] ?? "",
          labels,
          scores: probabilities.map((score, k) => ({ label: labelOf(k), score })),
          logits: returnLogits ? Array.from(logits) : [],
          truncated: encoded[i]!.truncated,
          num_tokens: encoded[i]!.encoding.ids.length,
        };
      });
      return { instance, results, timing };
    });
  }

  /** The model passes of each input (one, or one per window), refused when the queue could never admit them. */
  #passes(method: string, instance: ModelInstance, encoded: readonly WindowedInput[]): InferenceInput[][] {
    const passes = encoded.map(windowPasses);
    const count = passes.reduce((n, p) => n + p.length, 0);
    const limit = this.batcher.options.maxConcurrentRequests;
    if (count > limit) {
      // The queue could never admit them all: retrying (429) would not help.
      throw new PayloadTooLarge(
        `${method}: the texts take ${count} passes of at most ${instance.maxLength} tokens (long texts run as ` +
          `overlapping windows); at most ${limit} run at once (--max-concurrent-requests): send shorter or fewer texts`,
      );
    }
    return passes;
  }

  #ref(request: Message): { name: string; version: string } {
    return {
      name: stringField(request.model, "model"),
      version: stringField(request.version, "version"),
    };
  }

  /** A single-text call: `text` validated, the run's one result answered as `result`. */
  async #answerOne(request: Message, run: (items: TextItem[]) => Promise<Run>): Promise<Answer> {
    const { instance, results, timing } = await run([{
      text: textField(request.text, "text", new TextBudget()),
      field: "text",
    }]);
    return { response: { model: this.#modelRef(instance), result: results[0] }, timing };
  }

  /** A batch call: every `texts[i]` validated, all the run's results answered as `results`. */
  async #answerBatch(request: Message, run: (items: TextItem[]) => Promise<Run>): Promise<Answer> {
    const budget = new TextBudget();
    const items = this.#batchList(request.texts, "texts").map((t, i) => ({
      text: textField(t, `texts[${i}]`, budget),
      field: `texts[${i}]`,
    }));
    const { instance, results, timing } = await run(items);
    return { response: { model: this.#modelRef(instance), results }, timing };
  }

  async classify(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerOne(request, (items) => this.#classify(request, call, "Classify", items));
  }

  async classifyBatch(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerBatch(request, (items) => this.#classify(request, call, "ClassifyBatch", items));
  }

  #pairInput(
    value: unknown,
    field: string,
    budget: TextBudget,
  ): { text: string; pair: string; field: string } {
    const pair = messageField(value, field);
    return {
      text: textField(pair.text, `${field}.text`, budget),
      pair: textField(pair.text_pair, `${field}.text_pair`, budget),
      field,
    };
  }

  async classifyPair(request: Message, call: CallOptions = {}): Promise<Answer> {
    const input = this.#pairInput(request.pair, "pair", new TextBudget());
    const { instance, results, timing } = await this.#classify(request, call, "ClassifyPair", [input]);
    return { response: { model: this.#modelRef(instance), result: results[0] }, timing };
  }

  async classifyPairBatch(request: Message, call: CallOptions = {}): Promise<Answer> {
    const budget = new TextBudget();
    const pairs = this.#batchList(request.pairs, "pairs").map((p, i) =>
      this.#pairInput(p, `pairs[${i}]`, budget)
    );
    const { instance, results, timing } = await this.#classify(request, call, "ClassifyPairBatch", pairs);
    return { response: { model: this.#modelRef(instance), results }, timing };
  }

  // ---- Tag

  async #tag(
    request: Message,
    call: CallOptions,
    method: string,
    texts: Array<{ text: string; field: string }>,
  ): Promise<{ instance: ModelInstance; results: Message[]; timing: Timing }> {
    const options = messageField(request.options, "options");
    const truncation = enumField(options.truncation, TRUNCATIONS, "options.truncation");
    const returnTags = boolField(options.return_tags, "options.return_tags", false);
    const minScore = numberField(options.min_score, "options.min_score") ?? 0;
    if (!(minScore >= 0 && minScore <= 1)) {
      throw new InvalidArgument(`options.min_score must be in [0, 1]: got ${minScore}`);
    }
    return await this.registry.use(this.#ref(request), async (instance) => {
      this.#requireHead(instance, method, ["ner"], "a token classification (NER) head");
      const started = performance.now();
      const encoded = texts.map((t) => encodeWindowedInput(instance, t.text, truncation, t.field));
      const passes = this.#passes(method, instance, encoded);
      const { outputs, timing } = await this.#run(instance, passes.flat(), call, performance.now() - started);
      let next = 0;
      const results = encoded.map((input, i) => {
        const mine = outputs.slice(next, next += passes[i]!.length);
        const output = input.windows ? stitchTagOutputs(input, mine, instance.crf) : mine[0]!;
        return tagging(instance, texts[i]!.text, input, output, { returnTags, minScore });
      });
      return { instance, results, timing };
    });
  }

  async tag(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerOne(request, (items) => this.#tag(request, call, "Tag", items));
  }

  async tagBatch(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerBatch(request, (items) => this.#tag(request, call, "TagBatch", items));
  }

  // ---- FillMask

  async #fillMask(
    request: Message,
    call: CallOptions,
    method: string,
    texts: Array<{ text: string; field: string }>,
  ): Promise<{ instance: ModelInstance; results: Message[]; timing: Timing }> {
    const options = messageField(request.options, "options");
    const truncation = enumField(options.truncation, TRUNCATIONS, "options.truncation");
    const topK = uintField(options.top_k, "options.top_k") || 5;
    if (topK > 100) throw new InvalidArgument(`options.top_k must be at most 100: got ${topK}`);
    return await this.registry.use(this.#ref(request), async (instance) => {
      this.#requireMlm(instance, method);
      const started = performance.now();
      const maskId = instance.tokenizer.maskId;
      const encoded = texts.map((t) => {
        const e = encodeInput(instance, t.text, undefined, instance.maxLength, truncation, t.field);
        const positions = e.encoding.ids.flatMap((id, p) => (id === maskId ? [p] : []));
        if (positions.length === 0) {
          throw new InvalidArgument(
            e.truncated
              ? `${t.field}: every [MASK] was cut off by truncation at ${instance.maxLength} tokens`
              : `${t.field} has no [MASK] token: FillMask predicts the tokens at [MASK] positions`,
          );
        }
        return { ...e, positions };
      });
      const { outputs, timing } = await this.#run(
        instance,
        encoded.map((e) => ({ ids: e.encoding.ids, typeIds: e.encoding.typeIds, mlmPositions: e.positions })),
        call,
        performance.now() - started,
      );
      const V = instance.vocabSize;
      const results = outputs.map((output, i) => {
        const { encoding, positions, truncated } = encoded[i]!;
        const predictions = positions.map((position, row) => {
          const probabilities = softmax(output.mlm!, row * V, V);
          const order = topIndices(probabilities, topK);
          return {
            position,
            offset: { start: encoding.offsets[position]![0], end: encoding.offsets[position]![1] },
            candidates: order.map((id) => ({
              token: instance.tokenizer.idToToken[id] ?? "[UNK]",
              id,
              score: probabilities[id]!,
            })),
          };
        });
        // The text with each [MASK] (by its offsets) replaced by the best candidate, last one first.
        const chars = codePoints(texts[i]!.text);
        for (const prediction of [...predictions].reverse()) {
          const best = prediction.candidates[0]!.token.replace(/^##/, "");
          chars.splice(prediction.offset.start, prediction.offset.end - prediction.offset.start, best);
        }
        return { predictions, sequence: chars.join(""), truncated };
      });
      return { instance, results, timing };
    });
  }

  async fillMask(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerOne(request, (items) => this.#fillMask(request, call, "FillMask", items));
  }

  async fillMaskBatch(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerBatch(request, (items) => this.#fillMask(request, call, "FillMaskBatch", items));
  }

  // ---- Embed

  async #embed(
    request: Message,
    call: CallOptions,
    texts: Array<{ text: string; field: string }>,
  ): Promise<{ instance: ModelInstance; results: Message[]; timing: Timing }> {
    const options = messageField(request.options, "options");
    const truncation = enumField(options.truncation, TRUNCATIONS, "options.truncation");
    const pooling = enumField(options.pooling, POOLINGS, "options.pooling");
    const normalize = boolField(options.normalize, "options.normalize", false);
    return await this.registry.use(this.#ref(request), async (instance) => {
      if (pooling === "POOLING_POOLER" && !headUsesPooler(instance.head)) {
        const head = instance.head.task === "ner" ? "ner" : `${instance.head.task}, mean pooling`;
        throw new FailedPrecondition(
          `options.pooling POOLING_POOLER needs a pooler; model ${instance.name} (${head}) has none: use POOLING_CLS or POOLING_MEAN`,
        );
      }
      const started = performance.now();
      const encoded = texts.map((t) =>
        encodeInput(instance, t.text, undefined, instance.maxLength, truncation, t.field)
      );
      const { outputs, timing } = await this.#run(
        instance,
        encoded.map((e) => ({ ids: e.encoding.ids, typeIds: e.encoding.typeIds, wantHidden: true })),
        call,
        performance.now() - started,
      );
      const C = instance.config.hidden_size;
      const results = outputs.map((output, i) => {
        const hidden = output.hidden!;
        const T = hidden.length / C;
        let vector: Float64Array;
        if (pooling === "POOLING_MEAN") {
          vector = new Float64Array(C);
          for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) vector[c]! += hidden[t * C + c]!;
          for (let c = 0; c < C; c++) vector[c]! /= T;
        } else if (pooling === "POOLING_POOLER") {
          vector = Float64Array.from(output.pooled!);
        } else {
          vector = Float64Array.from(hidden.subarray(0, C));
        }
        if (normalize) {
          let norm = 0;
          for (const v of vector) norm += v * v;
          norm = Math.sqrt(norm) || 1;
          for (let c = 0; c < C; c++) vector[c]! /= norm;
        }
        return { values: Array.from(vector), truncated: encoded[i]!.truncated, num_tokens: T };
      });
      return { instance, results, timing };
    });
  }

  async embed(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerOne(request, (items) => this.#embed(request, call, items));
  }

  async embedBatch(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerBatch(request, (items) => this.#embed(request, call, items));
  }

  // ---- Tokenize

  async tokenize(request: Message, _call: CallOptions = {}): Promise<Answer> {
    const budget = new TextBudget();
    const inputs = this.#batchList(request.inputs, "inputs").map((value, i) => {
      const input = messageField(value, `inputs[${i}]`);
      const pair = checkText(
        stringField(input.text_pair, `inputs[${i}].text_pair`),
        `inputs[${i}].text_pair`,
        budget,
      );
      return {
        text: textField(input.text, `inputs[${i}].text`, budget),
        ...(pair !== "" ? { pair } : {}),
        field: `inputs[${i}]`,
      };
    });
    const options = messageField(request.options, "options");
    const truncation = enumField(options.truncation, TRUNCATIONS, "options.truncation");
    const padding = enumField(options.padding, PADDINGS, "options.padding");
    const addSpecial = boolField(options.add_special_tokens, "options.add_special_tokens", true);
    const multiple = uintField(options.pad_to_multiple_of, "options.pad_to_multiple_of") || 1;
    const started = performance.now();
    return await this.registry.use(this.#ref(request), (instance) => {
      const maxLength = uintField(options.max_length, "options.max_length") || instance.maxLength;
      const encoded = inputs.map((input) =>
        encodeInput(instance, input.text, input.pair, maxLength, truncation, input.field, addSpecial)
      );
      let padTo = 0;
      if (padding === "PADDING_LONGEST") padTo = Math.max(...encoded.map((e) => e.encoding.ids.length));
      if (padding === "PADDING_MAX_LENGTH") padTo = maxLength;
      if (padTo > 0) padTo = Math.ceil(padTo / multiple) * multiple;
      const encodings = encoded.map(({ encoding, truncated }) => {
        const pad = Math.max(0, padTo - encoding.ids.length);
        const padToken = instance.tokenizer.idToToken[instance.tokenizer.padId]!;
        return {
          tokens: [...encoding.tokens, ...Array(pad).fill(padToken)],
          ids: [...encoding.ids, ...Array(pad).fill(instance.tokenizer.padId)],
          type_ids: [...encoding.typeIds, ...Array(pad).fill(0)],
          offsets: [...encoding.offsets, ...Array(pad).fill([0, 0])].map(([start, end]) => ({ start, end })),
          attention_mask: [...encoding.attentionMask, ...Array(pad).fill(0)],
          special_tokens_mask: [...encoding.specialTokensMask, ...Array(pad).fill(1)],
          truncated,
        };
      });
      const tokenizeMs = performance.now() - started;
      return Promise.resolve({
        response: { model: this.#modelRef(instance), encodings },
        timing: { queueMs: 0, inferenceMs: 0, tokenizeMs },
      });
    });
  }

  // ---- ZeroShot

  async #zeroShot(
    request: Message,
    call: CallOptions,
    texts: Array<{ text: string; field: string }>,
  ): Promise<{ instance: ModelInstance; results: Message[]; timing: Timing }> {
    const options = messageField(request.options, "options");
    const truncation = enumField(options.truncation, TRUNCATIONS, "options.truncation");
    const template = stringField(options.template, "options.template");
    const maskCount = template.split("[MASK]").length - 1;
    if (maskCount === 0) {
      throw new InvalidArgument(
        'options.template must contain [MASK] where the label word goes, e.g. "{text}总之很[MASK][MASK]。"',
      );
    }
    const labels = arrayField(options.labels, "options.labels").map((l, i) =>
      stringField(l, `options.labels[${i}]`)
    );
    if (labels.length < 2) {
      throw new InvalidArgument(`options.labels needs at least 2 labels: got ${labels.length}`);
    }
    if (labels.some((l) => l.trim() === "")) {
      throw new InvalidArgument("options.labels must not contain empty labels");
    }
    const givenWords = arrayField(options.label_words, "options.label_words").map((w, i) =>
      stringField(w, `options.label_words[${i}]`)
    );
    if (givenWords.length > 0 && givenWords.length !== labels.length) {
      throw new InvalidArgument(
        `options.label_words has ${givenWords.length} words for ${labels.length} labels: give one per label or none`,
      );
    }
    const words = givenWords.length > 0 ? givenWords : labels;
    // Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): a small MLM favours some label words
    // whatever the text says; the template filled with no text measures that prior, and each text's scores
    // are taken relative to it.
    const calibrate = options.calibrate === true;
    const scored = calibrate ? [...texts, { text: "", field: "options.calibrate" }] : texts;
    return await this.registry.use(this.#ref(request), async (instance) => {
      this.#requireMlm(instance, "ZeroShot");
      const tokenizer = instance.tokenizer;
      const wordIds = words.map((word, k) => {
        const ids = tokenizer.convertTokensToIds(tokenizer.tokenize(word));
        if (ids.length === 0) throw new InvalidArgument(`options.label_words[${k}] "${word}" has no tokens`);
        if (maskCount > 1 && ids.length !== maskCount) {
          throw new InvalidArgument(
            `options.label_words[${k}] "${word}" is ${ids.length} tokens but the template has ${maskCount} [MASK]; ` +
              "use one [MASK] (widened per label) or words of that many tokens",
          );
        }
        return ids;
      });
      // One prompt per distinct label-word length: a single [MASK] is widened to the word's length.
      const lengths = [...new Set(wordIds.map((ids) => ids.length))];
      const started = performance.now();
      const prompts: Array<{ text: number; length: number; encoded: Encoded; positions: number[] }> = [];
      scored.forEach((t, textIndex) => {
        for (const length of lengths) {
          const filled = maskCount === 1 ? template.replace("[MASK]", "[MASK]".repeat(length)) : template;
          const encoded = encodePrompt(instance, t.text, filled, truncation, t.field);
          const positions = encoded.encoding.ids.flatMap((id, p) => (id === tokenizer.maskId ? [p] : []));
          if (positions.length !== length) {
            throw new InvalidArgument(
              `${t.field}: the prompt has ${positions.length} [MASK] tokens where ${length} were expected (does the text contain [MASK]?)`,
            );
          }
          prompts.push({ text: textIndex, length, encoded, positions });
        }
      });
      const { outputs, timing } = await this.#run(
        instance,
        prompts.map((p) => ({
          ids: p.encoded.encoding.ids,
          typeIds: p.encoded.encoding.typeIds,
          mlmPositions: p.positions,
        })),
        call,
        performance.now() - started,
      );
      const V = instance.vocabSize;
      const promptsOf = (textIndex: number) =>
        prompts.map((p, i) => ({ p, output: outputs[i]! })).filter(({ p }) => p.text === textIndex);
      const wordScores = (textIndex: number) => {
        const mine = promptsOf(textIndex);
        return wordIds.map((ids) => {
          const { output } = mine.find(({ p }) => p.length === ids.length)!;
          // Mean log-probability of the word's tokens at their [MASK] positions.
          let sum = 0;
          ids.forEach((id, j) => sum += output.mlm![j * V + id]! - logSumExp(output.mlm!, j * V, V));
          return sum / ids.length;
        });
      };
      const prior = calibrate ? wordScores(texts.length) : undefined;
      const results = texts.map((_, textIndex) => {
        const mine = promptsOf(textIndex);
        const raw = wordScores(textIndex);
        const scores = prior ? raw.map((score, k) => score - prior[k]!) : raw;
        const probabilities = softmax(scores);
        let best = 0;
        probabilities.forEach((p, k) => {
          if (p > probabilities[best]!) best = k;
        });
        return {
          label: labels[best],
          scores: labels.map((label, k) => ({ label, score: probabilities[k]! })),
          truncated: mine.some(({ p }) => p.encoded.truncated),
        };
      });
      return { instance, results, timing };
    });
  }

  async zeroShot(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerOne(request, (items) => this.#zeroShot(request, call, items));
  }

  async zeroShotBatch(request: Message, call: CallOptions = {}): Promise<Answer> {
    return await this.#answerBatch(request, (items) => this.#zeroShot(request, call, items));
  }
}

export { PayloadTooLarge };

/** Indices of the k largest values, largest first. */
function topIndices(values: Float64Array, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < values.length; i++) {
    if (best.length < k) {
      best.push(i);
      if (best.length === k) best.sort((a, b) => values[b]! - values[a]!);
    } else if (values[i]! > values[best[k - 1]!]!) {
      let j = k - 1;
      while (j > 0 && values[best[j - 1]!]! < values[i]!) j--;
      best.splice(j, 0, i);
      best.pop();
    }
  }
  return best.length < k ? best.sort((a, b) => values[b]! - values[a]!) : best;
}

/**
 * The zero-shot prompt: the text goes where `{text}` is, or before the template. When too long the text
 * (never the template) is shortened until the prompt fits, and the result says truncated.
 */
function encodePrompt(
  instance: ModelInstance,
  text: string,
  template: string,
  truncation: TruncationName,
  field: string,
): Encoded {
  const build = (
    t: string,
  ) => (template.includes("{text}") ? template.replaceAll("{text}", t) : `${t}${template}`);
  let chars = codePoints(text);
  let encoding = instance.tokenizer.encode(build(text), undefined, { truncation: false });
  if (encoding.ids.length <= instance.maxLength) return { encoding, truncated: false };
  if (truncation === "TRUNCATION_NONE") {
    throw new InvalidArgument(
      `${field}: the prompt is ${encoding.ids.length} tokens but model ${instance.name} takes at most ${instance.maxLength} (truncation is TRUNCATION_NONE)`,
    );
  }
  while (encoding.ids.length > instance.maxLength) {
    const over = encoding.ids.length - instance.maxLength;
    if (chars.length === 0) {
      throw new InvalidArgument(
        `options.template alone is longer than the model's ${instance.maxLength} tokens`,
      );
    }
    chars = chars.slice(0, Math.max(0, chars.length - Math.max(1, over)));
    encoding = instance.tokenizer.encode(build(chars.join("")), undefined, { truncation: false });
  }
  return { encoding, truncated: true };
}

// ------------------------------------------------------------------------------------------ tagging

interface TagOptions {
  returnTags: boolean;
  minScore: number;
}

/** `B-PER` → ["B", "PER"]; `O` → ["O", ""]; a bare `PER` (IO scheme) → ["I", "PER"]. */
function splitTag(tag: string): [string, string] {
  if (tag === "O" || tag === "") return ["O", ""];
  const match = /^([BIES])[-_](.+)$/.exec(tag);
  if (match) return [match[1]!, match[2]!];
  return ["I", tag];
}

/**
 * Entities from per-token tags. Each word's tag is its first piece's (the pieces after it, `##…`, were
 * ignored in training, as shared/data aligns them); B starts an entity, I continues one of the same type
 * (or starts one after O or another type), O ends it. Scores are the mean probability of the words' tags.
 * `output` covers the whole encoding: for a windowed input, the stitched output (stitchTagOutputs).
 */
export function tagging(
  instance: ModelInstance,
  text: string,
  encoded: Encoded,
  output: InferenceOutput,
  options: TagOptions,
): Message {
  const { encoding } = encoded;
  const K = instance.labels.length || output.logits.length / encoding.ids.length;
  const labelOf = (k: number) => instance.labels[k] ?? `LABEL_${k}`;
  const chars = codePoints(text);
  const tokenTags: Message[] = [];
  const entities: Message[] = [];
  let current: { type: string; start: number; end: number; scores: number[] } | undefined;
  const close = () => {
    if (!current) return;
    const score = current.scores.reduce((a, b) => a + b, 0) / current.scores.length;
    if (score >= options.minScore) {
      entities.push({
        type: current.type,
        text: chars.slice(current.start, current.end).join(""),
        start: current.start,
        end: current.end,
        score,
      });
    }
    current = undefined;
  };
  let wordTag = "O";
  let wordScore = 0;
  for (let t = 0; t < encoding.ids.length; t++) {
    if (encoding.specialTokensMask[t] === 1) continue;
    const token = encoding.tokens[t]!;
    const [start, end] = encoding.offsets[t]!;
    const probabilities = softmax(output.logits, t * K, K);
    const continuation = token.startsWith("##");
    if (!continuation) {
      let k = 0;
      if (output.paths && output.paths[t]! >= 0) k = output.paths[t]!;
      else probabilities.forEach((p, j) => (k = p > probabilities[k]! ? j : k));
      wordTag = labelOf(k);
      wordScore = probabilities[k]!;
      const [prefix, type] = splitTag(wordTag);
      if (prefix === "O") close();
      else if (prefix === "B" || prefix === "S" || !current || current.type !== type) {
        close();
        current = { type, start, end, scores: [wordScore] };
      } else {
        current.end = end;
        current.scores.push(wordScore);
      }
      if (prefix === "S" || prefix === "E") close();
    } else if (current) {
      current.end = Math.max(current.end, end);
    }
    if (options.returnTags) {
      const [prefix, type] = splitTag(wordTag);
      const tag = continuation && prefix === "B" ? `I-${type}` : wordTag;
      tokenTags.push({ token, tag, offset: { start, end }, score: wordScore });
    }
  }
  close();
  return {
    entities,
    tags: tokenTags,
    truncated: encoded.truncated,
    num_tokens: encoding.ids.length,
  };
}

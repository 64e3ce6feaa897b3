/**
 * Fine-tuning data: readers for the labelled formats (CSV, JSONL, BIO, CLUENER), label sets, encoding
 * with NER tag alignment and a truncation report, overlapping windows for NER sentences longer than the
 * model takes (and the stitching of their predictions), engine batches, a deterministic split, and metrics;
 * for extractive QA, SQuAD-style readers, windowed features, n-best decoding and the CMRC 2018 metric.
 *
 * ```ts
 * import { encodeTextExamples, LabelSet, readLabelledFile, textBatch, type TextExample } from "./mod.ts";
 *
 * const examples = await readLabelledFile("train.csv", { task: "classify" }) as TextExample[];
 * const labels = LabelSet.ofTextExamples(examples);
 * const { features, report } = encodeTextExamples(examples, tokenizer, labels, { task: "classify", maxLength: 128 });
 * const batch = textBatch(features.slice(0, 32), 128, tokenizer.padId);
 * ```
 *
 * @module
 */
export * from "./formats.ts";
export * from "./labels.ts";
export * from "./encode.ts";
export * from "./batch.ts";
export * from "./split.ts";
export * from "./metrics.ts";
export * from "./windows.ts";
export * from "./qa.ts";
export * from "./qa_encode.ts";
export * from "./qa_decode.ts";
export * from "./qa_metric.ts";

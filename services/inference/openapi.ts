/**
 * The OpenAPI 3.1 document of the HTTP API (served at `GET /openapi.json`). Schemas mirror the proto messages
 * of inference.proto with their proto field names, since the HTTP bodies are those messages as JSON.
 */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const str = { type: "string" };
const num = { type: "number" };
const int = { type: "integer", minimum: 0 };
const bool = { type: "boolean" };
const arr = (items: unknown) => ({ type: "array", items });
const obj = (properties: Record<string, unknown>, required: string[] = []) => ({
  type: "object",
  properties,
  ...(required.length ? { required } : {}),
});
const truncation = {
  type: "string",
  enum: [
    "TRUNCATION_UNSPECIFIED",
    "TRUNCATION_NONE",
    "TRUNCATION_LONGEST_FIRST",
    "TRUNCATION_ONLY_FIRST",
    "TRUNCATION_ONLY_SECOND",
  ],
  description:
    "Default: truncate to the model's maximum and say `truncated`; TRUNCATION_NONE refuses long input (400).",
};
const tagTruncation = {
  ...truncation,
  description:
    "Default and TRUNCATION_NONE: a text over the model's maximum is tagged whole through overlapping " +
    "windows (`truncated` false); a cutting strategy cuts it to one pass and says `truncated`.",
};

const schemas: Record<string, unknown> = {
  ModelRef: obj({ name: str, version: str }),
  TextInput: obj({ text: str, text_pair: str }, ["text"]),
  Error: obj({
    error: obj({
      code: { ...str, description: "The gRPC status name, e.g. NOT_FOUND" },
      message: str,
      status: int,
    }),
  }),
  LabelScore: obj({ label: str, score: num }),
  Classification: obj({
    label: str,
    labels: arr(str),
    scores: arr(ref("LabelScore")),
    logits: arr(num),
    truncated: bool,
    num_tokens: int,
  }),
  ClassifyOptions: obj({ truncation, threshold: num, return_logits: bool }),
  ClassifyRequest: obj({
    version: str,
    text: str,
    texts: { ...arr(str), description: "Batch form: one result per text, in order" },
    options: ref("ClassifyOptions"),
  }),
  ClassifyResponse: obj({
    model: ref("ModelRef"),
    result: ref("Classification"),
    results: arr(ref("Classification")),
  }),
  ClassifyPairRequest: obj({
    version: str,
    pair: ref("TextInput"),
    pairs: arr(ref("TextInput")),
    options: ref("ClassifyOptions"),
  }),
  Entity: obj({ type: str, text: str, start: int, end: int, score: num }),
  Offset: obj({ start: int, end: int }),
  TokenTag: obj({ token: str, tag: str, offset: ref("Offset"), score: num }),
  Tagging: obj({
    entities: arr(ref("Entity")),
    tags: arr(ref("TokenTag")),
    truncated: bool,
    num_tokens: int,
  }),
  TagRequest: obj({
    version: str,
    text: str,
    texts: arr(str),
    options: obj({ truncation: tagTruncation, return_tags: bool, min_score: num }),
  }),
  TagResponse: obj({ model: ref("ModelRef"), result: ref("Tagging"), results: arr(ref("Tagging")) }),
  FillMaskRequest: obj({
    version: str,
    text: { ...str, description: "Text with one or more [MASK]" },
    texts: arr(str),
    options: obj({ top_k: { ...int, maximum: 100 }, truncation }),
  }),
  FillMaskResult: obj({
    predictions: arr(obj({
      position: int,
      offset: ref("Offset"),
      candidates: arr(obj({ token: str, id: int, score: num })),
    })),
    sequence: str,
    truncated: bool,
  }),
  FillMaskResponse: obj({
    model: ref("ModelRef"),
    result: ref("FillMaskResult"),
    results: arr(ref("FillMaskResult")),
  }),
  EmbedRequest: obj({
    version: str,
    text: str,
    texts: arr(str),
    options: obj({
      pooling: {
        type: "string",
        enum: ["POOLING_UNSPECIFIED", "POOLING_CLS", "POOLING_MEAN", "POOLING_POOLER"],
      },
      normalize: bool,
      truncation,
    }),
  }),
  Embedding: obj({ values: arr(num), truncated: bool, num_tokens: int }),
  EmbedResponse: obj({ model: ref("ModelRef"), result: ref("Embedding"), results: arr(ref("Embedding")) }),
  TokenizeRequest: obj({
    version: str,
    inputs: arr(ref("TextInput")),
    text: str,
    text_pair: str,
    options: obj({
      max_length: int,
      truncation,
      padding: { type: "string", enum: ["PADDING_UNSPECIFIED", "PADDING_LONGEST", "PADDING_MAX_LENGTH"] },
      add_special_tokens: bool,
      pad_to_multiple_of: int,
    }),
  }),
  Encoding: obj({
    tokens: arr(str),
    ids: arr(int),
    type_ids: arr(int),
    offsets: arr(ref("Offset")),
    attention_mask: arr(int),
    special_tokens_mask: arr(int),
    truncated: bool,
  }),
  TokenizeResponse: obj({ model: ref("ModelRef"), encodings: arr(ref("Encoding")) }),
  ZeroShotRequest: obj({
    version: str,
    text: str,
    texts: arr(str),
    options: obj({
      template: { ...str, description: "Must contain [MASK]; {text} marks where the input goes" },
      labels: arr(str),
      label_words: arr(str),
      truncation,
    }, ["template", "labels"]),
  }),
  ZeroShotResult: obj({ label: str, scores: arr(ref("LabelScore")), truncated: bool }),
  ZeroShotResponse: obj({
    model: ref("ModelRef"),
    result: ref("ZeroShotResult"),
    results: arr(ref("ZeroShotResult")),
  }),
  ServedModel: obj({
    summary: obj({
      model: ref("ModelRef"),
      task: str,
      labels: arr(str),
      source: str,
      created_at: str,
      size_bytes: str,
      num_layers: int,
      hidden_size: int,
      num_heads: int,
      vocab_size: int,
      max_position_embeddings: int,
      crf: bool,
      pooling: str,
    }),
    state: str,
    backend: str,
    memory_bytes: str,
    is_default: bool,
  }),
  ListModelsResponse: obj({
    models: arr(ref("ServedModel")),
    page: obj({ next_page_token: str, total_size: int }),
  }),
  ModelInfoResponse: obj({
    model: ref("ServedModel"),
    config_json: str,
    lineage: { type: "object" },
    max_length: int,
    heads: arr(str),
    metrics: { type: "object", additionalProperties: num },
    error: str,
  }),
  LoadRequest: obj({ version: str, backend: str, set_default: bool }),
  LoadResponse: obj({ model: ref("ServedModel"), load_seconds: num }),
};

const errors = Object.fromEntries(
  [
    ["400", "Invalid argument: empty text, malformed JSON, too long with TRUNCATION_NONE"],
    ["404", "Unknown model"],
    ["409", "The model's head does not fit the operation (e.g. tag on a classifier)"],
    ["413", "Body or batch too large"],
    ["429", "Queue full: retry with backoff"],
    ["503", "Not ready"],
    ["504", "Deadline passed while queued"],
  ].map(([status, description]) => [
    status,
    { description, content: { "application/json": { schema: ref("Error") } } },
  ]),
);

const timingHeaders = Object.fromEntries(
  ["x-queue-time", "x-inference-time", "x-tokenization-time", "x-total-time"].map((h) => [
    h,
    { description: "milliseconds", schema: { type: "string" } },
  ]),
);

function operation(op: string, summary: string, request: string, response: string) {
  return {
    [`/v1/models/{name}:${op}`]: {
      post: {
        operationId: op,
        summary,
        parameters: [{ name: "name", in: "path", required: true, schema: str }, {
          name: "x-request-timeout-ms",
          in: "header",
          required: false,
          schema: int,
        }],
        requestBody: { required: true, content: { "application/json": { schema: ref(request) } } },
        responses: {
          "200": {
            description: "OK",
            headers: timingHeaders,
            content: { "application/json": { schema: ref(response) } },
          },
          ...errors,
        },
      },
    },
  };
}

export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "bertforge inference",
      version: "1",
      description:
        "BERT models from the bertforge store: classification, NER tagging, fill-mask, embeddings, " +
        "tokenization and zero-shot. The same operations exist over gRPC (bertforge.v1.InferenceService).",
    },
    paths: {
      ...operation(
        "classify",
        "Sequence classification (single or multi-label)",
        "ClassifyRequest",
        "ClassifyResponse",
      ),
      ...operation("classifyPair", "Sentence-pair classification", "ClassifyPairRequest", "ClassifyResponse"),
      ...operation("tag", "Named entities", "TagRequest", "TagResponse"),
      ...operation("fillMask", "Top-k tokens per [MASK]", "FillMaskRequest", "FillMaskResponse"),
      ...operation("embed", "Sentence embeddings", "EmbedRequest", "EmbedResponse"),
      ...operation("tokenize", "The model's tokenizer", "TokenizeRequest", "TokenizeResponse"),
      ...operation(
        "zeroShot",
        "Zero-shot classification with the MLM head",
        "ZeroShotRequest",
        "ZeroShotResponse",
      ),
      ...operation("load", "Load a model (latest unless a version is given)", "LoadRequest", "LoadResponse"),
      "/v1/models": {
        get: {
          operationId: "listModels",
          parameters: [
            { name: "page_size", in: "query", schema: int },
            { name: "page_token", in: "query", schema: str },
            { name: "loaded_only", in: "query", schema: bool },
          ],
          responses: {
            "200": {
              description: "OK",
              content: { "application/json": { schema: ref("ListModelsResponse") } },
            },
          },
        },
      },
      "/v1/models/{name}": {
        get: {
          operationId: "modelInfo",
          parameters: [{ name: "name", in: "path", required: true, schema: str }, {
            name: "version",
            in: "query",
            schema: str,
          }],
          responses: {
            "200": {
              description: "OK",
              content: { "application/json": { schema: ref("ModelInfoResponse") } },
            },
            ...errors,
          },
        },
        delete: {
          operationId: "unload",
          parameters: [{ name: "name", in: "path", required: true, schema: str }],
          responses: { "200": { description: "Unloaded" }, ...errors },
        },
      },
      "/health": {
        get: {
          operationId: "health",
          responses: { "200": { description: "Default models loaded" }, "503": { description: "Not ready" } },
        },
      },
      "/metrics": {
        get: { operationId: "metrics", responses: { "200": { description: "Prometheus text format" } } },
      },
    },
    components: {
      schemas,
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    },
  };
}

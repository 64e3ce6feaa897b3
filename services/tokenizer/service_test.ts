import { assert, assertEquals, assertRejects } from "../shared/std/assert.ts";
import { loadSettings } from "../shared/config/mod.ts";
import { client, type Message, uploadRequests } from "../shared/rpc/mod.ts";
import { AlreadyExists, InvalidArgument, NotFound, ResourceExhausted } from "../shared/errors.ts";
import { LocalStore } from "../shared/store/local.ts";
import { WordPieceTokenizer } from "../shared/wordpiece/mod.ts";
import {
  BERT_BASE_CHINESE_VOCAB,
  comparable,
  fromReference,
  loadTokenizers,
} from "../../tests/fixtures/tokenizer/reference.ts";
import { start } from "./main.ts";

type Rpc = ReturnType<typeof client>;

/** A tokenizer service on a free loopback port over a fresh store folder. */
async function withService(fn: (rpc: Rpc, store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "bf-tokenizer-svc-" });
  const settings = loadSettings("tokenizer", {
    args: ["--port", "0", "--store", dir, "--log-level", "warn"],
    env: () => undefined,
  });
  const server = await start(settings);
  const rpc = client("TokenizerService", server.address, { defaultDeadlineMs: 60_000 });
  try {
    await fn(rpc, new LocalStore(dir));
  } finally {
    rpc.close();
    await server.shutdown("test done");
    await Deno.remove(dir, { recursive: true });
  }
}

const vocabBytes = () => Deno.readFileSync(BERT_BASE_CHINESE_VOCAB);

async function importChinese(rpc: Rpc): Promise<Message> {
  const { vocab } = await rpc.unary("ImportVocab", { name: "zh", vocab_txt: vocabBytes(), lowercase: true });
  return vocab;
}

Deno.test("ImportVocab then Tokenize gives the ids of BertTokenizerFast, pairs, truncation and padding", async () => {
  await withService(async (rpc) => {
    const vocab = await importChinese(rpc);
    assertEquals(vocab.size, 21128);
    assertEquals(
      vocab.sha256,
      WordPieceTokenizer.fromVocabText(Deno.readTextFileSync(BERT_BASE_CHINESE_VOCAB)).hash(),
    );
    const { encodings, vocab_sha256 } = await rpc.unary("Tokenize", {
      vocab: "zh",
      inputs: [{ text: "你好，BERT!" }, { text: "一二三四五六", text_pair: "甲乙" }],
      options: { max_length: 8, padding: "PADDING_MAX_LENGTH" },
    });
    assertEquals(vocab_sha256, vocab.sha256);
    assertEquals(encodings[0].ids, [101, 872, 1962, 8024, 8815, 8716, 106, 102]);
    assertEquals(encodings[0].offsets.slice(1, 3), [{ start: 0, end: 1 }, { start: 1, end: 2 }]);
    assertEquals(encodings[1].tokens, ["[CLS]", "一", "二", "三", "[SEP]", "甲", "乙", "[SEP]"]);
    assertEquals(encodings[1].type_ids, [0, 0, 0, 0, 0, 1, 1, 1]);
    assertEquals(encodings[1].truncated, true);
    const padded = await rpc.unary("Tokenize", {
      vocab: "zh",
      inputs: [{ text: "一" }, { text: "一二三" }],
      options: { padding: "PADDING_LONGEST", pad_to_multiple_of: 8 },
    });
    assertEquals(padded.encodings.map((e: Message) => e.ids.length), [8, 8]);
    assertEquals(padded.encodings[0].attention_mask, [1, 1, 1, 0, 0, 0, 0, 0]);
    await assertRejects(
      () =>
        rpc.unary("Tokenize", {
          vocab: "zh",
          inputs: [{ text: "一二三四五六七八九十" }],
          options: { max_length: 5, truncation: "TRUNCATION_NONE" },
        }),
      InvalidArgument,
      "TRUNCATION_NONE",
    );
  });
});

Deno.test("bad input gets the documented status: NOT_FOUND, INVALID_ARGUMENT naming the line, RESOURCE_EXHAUSTED", async () => {
  await withService(async (rpc) => {
    await assertRejects(
      () => rpc.unary("Tokenize", { vocab: "nope", inputs: [{ text: "a" }] }),
      NotFound,
      "nope",
    );
    await assertRejects(
      () =>
        rpc.unary("ImportVocab", {
          name: "bad",
          vocab_txt: new TextEncoder().encode("[PAD]\n[UNK]\nfoo 3\n"),
        }),
      InvalidArgument,
      "line 3",
    );
    await assertRejects(
      () => rpc.unary("ImportVocab", { name: "bad", vocab_txt: new Uint8Array([0x5b, 0xff, 0xfe, 0x0a]) }),
      InvalidArgument,
      "UTF-8",
    );
    for (const name of ["../x", "..x", ".hidden", "a..b", "-a"]) {
      await assertRejects(
        () => rpc.unary("ImportVocab", { name, vocab_txt: vocabBytes() }),
        InvalidArgument,
        `name must be 1-128 characters of letters, digits, '-', '_' or '.', not starting with '.' and with no '..'`,
      );
      await assertRejects(() => rpc.unary("GetVocab", { name }), InvalidArgument, "name must be");
    }
    await importChinese(rpc);
    await assertRejects(
      () => rpc.unary("ImportVocab", { name: "zh", vocab_txt: vocabBytes() }),
      AlreadyExists,
    );
    await assertRejects(
      () => rpc.unary("ListVocabs", { page: { page_token: "abc" } }),
      InvalidArgument,
      "page.page_token must be the next_page_token of a previous page",
    );
    await assertRejects(
      () =>
        rpc.unary("Tokenize", { vocab: "zh", inputs: Array.from({ length: 4097 }, () => ({ text: "a" })) }),
      ResourceExhausted,
      "4096",
    );
    await assertRejects(
      () => rpc.unary("Tokenize", { vocab: "zh", inputs: [{ text: "x".repeat(4 * 1024 * 1024 + 1) }] }),
      ResourceExhausted,
    );
    await assertRejects(
      () => rpc.unary("Tokenize", { vocab: "zh", inputs: [{ text: "broken \uFFFD byte" }] }),
      InvalidArgument,
      "UTF-8",
    );
    await assertRejects(() => rpc.unary("GetVocab", { name: "nope" }), NotFound);
    await assertRejects(
      () => rpc.unary("StartTrainVocab", { name: "v", corpus: "no-such-corpus", vocab_size: 100 }),
      NotFound,
      "corpus",
    );
  });
});

Deno.test("TokenizeStream answers every message in order and reports a bad item without ending", async () => {
  await withService(async (rpc) => {
    await importChinese(rpc);
    async function* requests() {
      yield { id: "a", vocab: "zh", input: { text: "你好" }, options: { max_length: 16 } };
      yield { id: "b", input: { text: "世界", text_pair: "BERT" } };
      yield { id: "c", vocab: "missing", input: { text: "x" } };
      yield { id: "d", input: { text: "好" } };
    }
    const responses: Message[] = [];
    for await (const response of rpc.bidi("TokenizeStream", requests())) responses.push(response);
    assertEquals(responses.map((r) => r.id), ["a", "b", "c", "d"]);
    assertEquals(responses[0].encoding.ids, [101, 872, 1962, 102]);
    assertEquals(responses[1].encoding.type_ids, [0, 0, 0, 0, 1, 1, 1]);
    assertEquals(responses[2].error.code, "NOT_FOUND");
    assertEquals(responses[3].encoding.ids, [101, 1962, 102]);
  });
});

Deno.test("UploadCorpus + StartTrainVocab stream progress, publish a vocab that tokenizers loads with the same ids", async () => {
  await withService(async (rpc, store) => {
    const english = "The quick brown fox jumps over the lazy dog.\nQuickly, the foxes jumped again!\n\n";
    const chinese = "商务大床房，房间很大，床有2M宽，整体感觉经济实惠不错!\n宾馆在小街道上，不大好找。\n";
    const gz = new Uint8Array(
      await new Response(
        new Blob([chinese.repeat(20)]).stream().pipeThrough(
          new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
        ),
      ).arrayBuffer(),
    );
    const uploaded = await rpc.clientStream(
      "UploadCorpus",
      uploadRequests({ name: "mixed" }, [
        { path: "a.txt", source: new TextEncoder().encode(english.repeat(30)) },
        { path: "b.txt.gz", source: gz },
      ]),
    );
    assertEquals(uploaded.files, 2);
    assertEquals(uploaded.lines, String(30 * 3 + 40));
    assertEquals(uploaded.documents, "31");
    await assertRejects(
      () =>
        rpc.clientStream(
          "UploadCorpus",
          uploadRequests({ name: "binary" }, [{ path: "x.txt", source: new Uint8Array([0xff, 0xfe, 0x00]) }]),
        ),
      InvalidArgument,
      "UTF-8",
    );
    assert(
      !(await store.exists("corpora/binary/MANIFEST.json")),
      "a refused upload leaves nothing published",
    );

    const { job } = await rpc.unary("StartTrainVocab", {
      name: "mixed-v",
      corpus: "mixed",
      vocab_size: 150,
      lowercase: true,
    });
    assert(job.id.includes("train_vocab"), job.id);
    const events: Message[] = [];
    for await (const response of rpc.serverStream("WatchJob", { job_id: job.id })) {
      events.push(response.event);
    }
    const last = events.at(-1)!;
    assertEquals(last.state, "JOB_STATE_SUCCEEDED", JSON.stringify(events.map((e) => e.message)));
    assert(events.some((e) => e.type === "JOB_EVENT_TYPE_PROGRESS" && e.unit === "bytes"), "corpus progress");
    const artifact = events.find((e) => e.type === "JOB_EVENT_TYPE_ARTIFACT");
    assertEquals(artifact?.artifact?.name, "mixed-v");
    const done = await rpc.unary("GetJob", { job_id: job.id });
    assertEquals(done.job.outputs[0].name, "mixed-v");
    await assertRejects(() => rpc.unary("CancelJob", { job_id: job.id }), Error, "already finished");
    await assertRejects(
      () => rpc.unary("StartTrainVocab", { name: "mixed-v", corpus: "mixed", vocab_size: 150 }),
      AlreadyExists,
    );

    const { vocab, vocab_txt, tokenizer_json } = await rpc.unary("GetVocab", {
      name: "mixed-v",
      include_files: true,
    });
    assert(
      vocab.size > 100 && vocab.size <= 150,
      `vocab size ${vocab.size}: merges stop at 150 or when no pair occurs twice`,
    );
    assertEquals(vocab.special_tokens, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
    const text = new TextDecoder().decode(vocab_txt);
    assertEquals(text.split("\n").slice(0, 5), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
    // Each CJK character is a word of its own: a token, never a continuation or part of a longer token.
    assert(
      text.includes("\n床\n") && !text.includes("##床") && !/\p{Script=Han}{2}/u.test(text),
      "CJK tokens",
    );
    const lines = ["The QUICK fox 宾馆很大!", "Unseen wörds [MASK]"];
    const { encodings } = await rpc.unary("Tokenize", {
      vocab: "mixed-v",
      inputs: lines.map((t) => ({ text: t })),
    });
    const tk = await loadTokenizers();
    if (tk) {
      const reference = tk.Tokenizer.fromString(new TextDecoder().decode(tokenizer_json));
      for (let i = 0; i < lines.length; i++) {
        const expected = fromReference(await reference.encode(lines[i]));
        assertEquals(encodings[i].ids, expected.ids);
        assertEquals(encodings[i].offsets.map((o: Message) => [o.start, o.end]), expected.offsets);
      }
    }
    const listed = await rpc.unary("ListVocabs", {});
    assertEquals(listed.vocabs.map((v: Message) => v.name), ["mixed-v"]);
    const jobs = await rpc.unary("ListJobs", {});
    assertEquals(jobs.jobs.map((j: Message) => j.id), [job.id]);
    // The stored files are the published artifact: reloading vocab.txt gives the same tokenizer.
    const reloaded = WordPieceTokenizer.fromVocabText(await store.getText("vocabs/mixed-v/vocab.txt"));
    assertEquals(comparable(reloaded.encode(lines[0])).slice(0, 2), [encodings[0].ids, encodings[0].tokens]);
  });
});

Deno.test("ImportVocab without a case setting reads an uncased vocabulary uncased, a cased one cased", async () => {
  await withService(async (rpc) => {
    await rpc.unary("ImportVocab", { name: "uncased", vocab_txt: vocabBytes() });
    const { encodings } = await rpc.unary("Tokenize", {
      vocab: "uncased",
      inputs: [{ text: "你好，BERT!" }],
    });
    assertEquals(encodings[0].ids, [101, 872, 1962, 8024, 8815, 8716, 106, 102]);
    const cased = new TextEncoder().encode("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nBert\nbert\n!\n");
    await rpc.unary("ImportVocab", { name: "cased", vocab_txt: cased });
    const { encodings: casedEncodings } = await rpc.unary("Tokenize", {
      vocab: "cased",
      inputs: [{ text: "Bert bert!" }],
    });
    assertEquals(casedEncodings[0].tokens, ["[CLS]", "Bert", "bert", "!", "[SEP]"]);
  });
});

Deno.test("TokenizerService survives random bytes on every method, uploads included: never INTERNAL, never a crash", async () => {
  await withService(async (rpc) => {
    await importChinese(rpc);
    // From a client in its own process (see tests/support/raw_grpc_fuzz.ts for why).
    const fuzzer = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-check=remote",
        new URL("../../tests/support/raw_grpc_fuzz.ts", import.meta.url).pathname,
        rpc.address,
        "777",
        "48",
        "TokenizerService",
        "Tokenize,ImportVocab,GetVocab,ListVocabs,StartTrainVocab,GetJob,ListJobs,CancelJob,stream:UploadCorpus",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(fuzzer.success, new TextDecoder().decode(fuzzer.stderr));
    const calls: { method: string; code: number; details: string }[] = JSON.parse(
      new TextDecoder().decode(fuzzer.stdout),
    );
    assertEquals(calls.length, 48);
    for (const { method, code, details } of calls) {
      // 13 INTERNAL is allowed only where grpc-js could not parse the bytes, before any handler ran; 14 never.
      assert(
        code !== 14 && (code !== 13 || /pars|deserializ/i.test(details)),
        `${method} → ${code} ${details}`,
      );
    }
    // Structured uploads with random paths and bytes: refused with a status naming the problem, or stored.
    let seed = 99;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const paths = [
      "a.txt",
      "dir/",
      "/abs.txt",
      "../x.txt",
      "a//b.txt",
      "x.gz",
      "b.bin",
      "",
      "c\u0000.txt",
      "ok",
    ];
    for (let i = 0; i < 20; i++) {
      const path = paths[i % paths.length]!;
      const data = Uint8Array.from({ length: Math.floor(random() * 200) }, () => Math.floor(random() * 256));
      const code = await rpc.clientStream(
        "UploadCorpus",
        (async function* () {
          yield { chunk: { header: { name: `fuzz-${i}` } } };
          yield { chunk: { file: { path, data, eof: true } } };
        })(),
      ).then(() => "OK", (e) => e.code);
      assert(["OK", "INVALID_ARGUMENT"].includes(code), `${JSON.stringify(path)} → ${code}`);
    }
    assertEquals((await rpc.unary("GetVocab", { name: "zh" })).vocab.size, 21128);
  });
});

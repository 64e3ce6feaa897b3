import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { FailedPrecondition, InvalidArgument, NotFound, Unavailable } from "../errors.ts";
import {
  client,
  healthClient,
  type Message,
  receiveUpload,
  RpcClient,
  saveDownload,
  serve,
  uploadRequests,
  waitForServing,
  watchJob,
} from "./mod.ts";
import { GrpcStatus } from "./status.ts";

const quiet = { handleSignals: false, port: 0, log: silentLogger() } as const;

function silentLogger() {
  const noop = () => {};
  const logger = { name: "test", level: "error" as const, debug: noop, info: noop, warn: noop, error: noop };
  return { ...logger, child: () => logger as never };
}

const codeOf = (error: unknown) => String((error as { code?: string }).code);
const grpcCodeOf = (error: unknown) => (error as { grpcCode?: number }).grpcCode;

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

Deno.test("serve() maps a thrown BertforgeError to exactly its status and message", async () => {
  const server = await serve({
    ...quiet,
    service: "TokenizerService",
    handlers: {
      GetVocab: ({ name }) => {
        if (name === "missing") throw new NotFound(`vocab "missing" not found: name names no vocabulary`);
        if (name === "bad") throw new InvalidArgument("name must not be empty");
        if (name === "state") throw new FailedPrecondition("vocab is still training");
        if (name === "crash") throw new Error("secret internal detail");
        return { vocab: { name, size: 7 } };
      },
    },
  });
  const tokenizer = client("TokenizerService", server.address);
  try {
    const ok = await tokenizer.unary("GetVocab", { name: "zh" });
    assertEquals(ok.vocab.name, "zh");
    assertEquals(ok.vocab.size, 7);
    assertEquals(ok.vocab.lowercase, false, "defaults: unset scalars read as zero values");

    const missing = await assertRejects(() => tokenizer.unary("GetVocab", { name: "missing" }), NotFound);
    assertEquals(missing.message, `vocab "missing" not found: name names no vocabulary`);
    assertEquals(grpcCodeOf(missing), GrpcStatus.NOT_FOUND);
    await assertRejects(
      () => tokenizer.unary("GetVocab", { name: "bad" }),
      InvalidArgument,
      "name must not be empty",
    );
    await assertRejects(() => tokenizer.unary("GetVocab", { name: "state" }), FailedPrecondition);

    const internal = await assertRejects(() => tokenizer.unary("GetVocab", { name: "crash" }));
    assertEquals(codeOf(internal), "INTERNAL");
    assert(
      !(internal as Error).message.includes("secret"),
      "an unknown error's text stays in the server log",
    );

    const unimplemented = await assertRejects(() => tokenizer.unary("Tokenize", { vocab: "zh", inputs: [] }));
    assertEquals(codeOf(unimplemented), "UNIMPLEMENTED");
    assertStringIncludes(
      (unimplemented as Error).message,
      "bertforge.v1.TokenizerService/Tokenize is not implemented yet",
    );
  } finally {
    tokenizer.close();
    await server.shutdown();
  }
});

Deno.test("serve() refuses a handler that names no method of the service", async () => {
  await assertRejects(
    () => serve({ ...quiet, service: "TokenizerService", handlers: { Tokenise: () => ({}) } }),
    TypeError,
    "handlers.Tokenise is not a method of bertforge.v1.TokenizerService",
  );
});

Deno.test("serve() streams: server streaming, client streaming upload with sha256 check, bidirectional", async () => {
  const received: Record<string, string> = {};
  const server = await serve({
    ...quiet,
    service: "TokenizerService",
    handlers: {
      WatchJob: async function* ({ job_id }) {
        for (let seq = 1; seq <= 3; seq++) yield { event: { job_id, seq, state: "JOB_STATE_RUNNING" } };
        yield { event: { job_id, seq: 4, state: "JOB_STATE_SUCCEEDED" } };
      },
      UploadCorpus: async (requests) => {
        const upload = await receiveUpload(requests);
        for await (const file of upload.files()) {
          received[file.path] = await new Response(file.stream).text();
        }
        return { corpus: { name: upload.header.name }, files: Object.keys(received).length };
      },
      TokenizeStream: async function* (requests) {
        for await (const request of requests) {
          yield { id: request.id, encoding: { tokens: [...request.input.text] } };
        }
      },
    },
  });
  const tokenizer = client("TokenizerService", server.address);
  try {
    const events = await collect(watchJob(tokenizer, "vocab-1"));
    assertEquals(events.map((e) => e.seq), [1, 2, 3, 4]);
    assertEquals(events.at(-1)!.state, "JOB_STATE_SUCCEEDED");

    const big = "line\n".repeat(300_000); // 1.5 MB: several chunks
    const response = await tokenizer.clientStream(
      "UploadCorpus",
      uploadRequests({ name: "poems" }, [
        { path: "a.txt", source: new TextEncoder().encode(big) },
        { path: "dir/b.txt", source: new TextEncoder().encode("second file") },
      ], 256 * 1024),
    );
    assertEquals(response.corpus.name, "poems");
    assertEquals(response.files, 2);
    assertEquals(received["a.txt"]!.length, big.length);
    assertEquals(received["dir/b.txt"], "second file");

    const tampered = async function* () {
      yield { chunk: { header: { name: "x" } } };
      yield {
        chunk: { file: { path: "a.txt", data: new TextEncoder().encode("abc"), eof: true, sha256: "00" } },
      };
    };
    await assertRejects(
      () => tokenizer.clientStream("UploadCorpus", tampered()),
      InvalidArgument,
      "does not match",
    );
    const escaping = async function* () {
      yield { chunk: { header: { name: "x" } } };
      yield { chunk: { file: { path: "../etc/passwd", data: new Uint8Array(1), eof: true } } };
    };
    await assertRejects(
      () => tokenizer.clientStream("UploadCorpus", escaping()),
      InvalidArgument,
      "relative path",
    );

    const answers = await collect(
      tokenizer.bidi("TokenizeStream", [{ id: "1", vocab: "v", input: { text: "ab" } }, {
        id: "2",
        input: { text: "c" },
      }]),
    );
    assertEquals(answers.map((a: Message) => [a.id, a.encoding.tokens]), [["1", ["a", "b"]], ["2", ["c"]]]);
  } finally {
    tokenizer.close();
    await server.shutdown();
  }
});

Deno.test("saveDownload() writes the file chunks of a server stream under a folder", async () => {
  const server = await serve({
    ...quiet,
    service: "TrainerService",
    handlers: {
      ExportModel: async function* () {
        yield { model: { model: { name: "m", version: "1" } } };
        yield { file: { path: "config.json", data: new TextEncoder().encode("{}"), eof: true } };
        yield { file: { path: "nested/vocab.txt", data: new TextEncoder().encode("[PAD]\n"), eof: false } };
        yield { file: { path: "nested/vocab.txt", data: new TextEncoder().encode("[UNK]\n"), eof: true } };
      },
    },
  });
  const trainer = client("TrainerService", server.address);
  const dir = await Deno.makeTempDir();
  try {
    let first: Message | undefined;
    const written = await saveDownload(
      trainer.serverStream("ExportModel", { model: { name: "m" } }),
      dir,
      (m) => first = m,
    );
    assertEquals(first?.model?.model?.name, "m");
    assertEquals(written, ["config.json", "nested/vocab.txt"]);
    assertEquals(await Deno.readTextFile(`${dir}/nested/vocab.txt`), "[PAD]\n[UNK]\n");
  } finally {
    trainer.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client() retries UNAVAILABLE with backoff: a thrown Unavailable and a server that starts late", async () => {
  let attempts = 0;
  const server = await serve({
    ...quiet,
    service: "InferenceService",
    handlers: {
      ModelInfo: () => {
        attempts++;
        if (attempts < 3) throw new Unavailable("model is loading");
        return { model: { state: "MODEL_STATE_READY" } };
      },
    },
  });
  const inference = client("InferenceService", server.address, {
    retry: { initialBackoffMs: 10, maxBackoffMs: 50 },
  });
  try {
    const info = await inference.unary("ModelInfo", { model: { name: "m" } });
    assertEquals(info.model.state, "MODEL_STATE_READY");
    assertEquals(attempts, 3);
    attempts = 0;
    await assertRejects(() => inference.unary("ModelInfo", {}, { retry: { maxAttempts: 1 } }), Unavailable);
    assertEquals(attempts, 1, "maxAttempts 1 turns retries off");
  } finally {
    inference.close();
    await server.shutdown();
  }

  // Nothing listens yet: the first attempts are refused, the server appears, a later attempt succeeds.
  const probe = await serve({ ...quiet, service: "InferenceService", handlers: {} });
  const port = probe.port;
  await probe.shutdown();
  const late = client("InferenceService", `127.0.0.1:${port}`, {
    retry: { maxAttempts: 20, initialBackoffMs: 50, maxBackoffMs: 200 },
  });
  let lateServer: Awaited<ReturnType<typeof serve>> | undefined;
  const starting = new Promise<void>((resolve) =>
    setTimeout(async () => {
      lateServer = await serve({
        ...quiet,
        port,
        service: "InferenceService",
        handlers: { ListModels: () => ({ models: [{ state: "MODEL_STATE_READY" }] }) },
      });
      resolve();
    }, 400)
  );
  try {
    const started = Date.now();
    const list = await late.unary("ListModels", {}, { deadlineMs: 10_000 });
    assertEquals(list.models.length, 1);
    assert(Date.now() - started >= 300, "the call waited for the server");
  } finally {
    await starting;
    late.close();
    await lateServer?.shutdown();
  }
});

Deno.test("bearer auth: calls without the token are UNAUTHENTICATED, health and reflection are exempt", async () => {
  const server = await serve({
    ...quiet,
    service: "ShardingService",
    authToken: "s3cret-token",
    handlers: { ListShards: () => ({ shard_sets: [] }) },
  });
  const noToken = client("ShardingService", server.address, { authToken: "" });
  const wrongToken = client("ShardingService", server.address, { authToken: "nope" });
  const withToken = client("ShardingService", server.address, { authToken: "s3cret-token" });
  try {
    const denied = await assertRejects(() => noToken.unary("ListShards", {}));
    assertEquals(codeOf(denied), "UNAUTHENTICATED");
    assertStringIncludes((denied as Error).message, "authorization is missing");
    const wrong = await assertRejects(() => wrongToken.unary("ListShards", {}));
    assertEquals(codeOf(wrong), "UNAUTHENTICATED");
    assertEquals((await withToken.unary("ListShards", {})).shard_sets, []);
    await waitForServing(server.address, { authToken: "", timeoutMs: 5000 });
    const services = await listServicesByReflection(server.address);
    assert(services.includes("bertforge.v1.ShardingService"));
  } finally {
    for (const c of [noToken, wrongToken, withToken]) c.close();
    await server.shutdown();
  }
});

Deno.test("health: per-service status that the service sets; unknown service is NOT_FOUND", async () => {
  const server = await serve({
    ...quiet,
    service: "InferenceService",
    handlers: {},
    initialStatus: "NOT_SERVING",
  });
  const health = healthClient(server.address);
  try {
    const check = (service: string) => health.unary("Check", { service }, { retry: { maxAttempts: 1 } });
    assertEquals((await check("bertforge.v1.InferenceService")).status, "NOT_SERVING");
    server.setServing(true);
    assertEquals((await check("bertforge.v1.InferenceService")).status, "SERVING");
    assertEquals((await check("")).status, "SERVING");
    await assertRejects(() => check("bertforge.v1.Nope"), NotFound);
  } finally {
    health.close();
    await server.shutdown();
  }
});

/** Asks grpc.reflection.v1 (what grpcurl uses) for the service list. */
async function listServicesByReflection(address: string): Promise<string[]> {
  const reflection = new RpcClient("grpc.reflection.v1.ServerReflection", address, { authToken: "" });
  try {
    const [answer] = await collect(reflection.bidi("ServerReflectionInfo", [{ list_services: "*" }]));
    return answer!.list_services_response.service.map((s: { name: string }) => s.name);
  } finally {
    reflection.close();
  }
}

Deno.test("reflection: lists the service and health, and describes the service's file", async () => {
  const server = await serve({ ...quiet, service: "TrainerService", handlers: {} });
  const reflection = new RpcClient("grpc.reflection.v1.ServerReflection", server.address);
  try {
    const services = await listServicesByReflection(server.address);
    assertEquals(services.sort(), ["bertforge.v1.TrainerService", "grpc.health.v1.Health"]);
    const [described] = await collect(
      reflection.bidi("ServerReflectionInfo", [{ file_containing_symbol: "bertforge.v1.TrainerService" }]),
    );
    const files: Uint8Array[] = described!.file_descriptor_response.file_descriptor_proto;
    assert(files.length > 0, "a FileDescriptorProto comes back");
    const text = new TextDecoder("latin1").decode(files.reduce((a, b) => new Uint8Array([...a, ...b])));
    for (const needle of ["SubmitJob", "ExportModel", "PretrainSpec", "JobEvent"]) {
      assertStringIncludes(text, needle);
    }
  } finally {
    reflection.close();
    await server.shutdown();
  }
});

Deno.test("shutdown() drains: an in-flight call finishes, new calls are refused, finished resolves", async () => {
  let started!: () => void;
  const handlerStarted = new Promise<void>((resolve) => started = resolve);
  const server = await serve({
    ...quiet,
    service: "TrainerService",
    handlers: {
      GetJob: async ({ job_id }) => {
        started();
        await new Promise((resolve) => setTimeout(resolve, 600));
        return { job: { id: job_id, state: "JOB_STATE_SUCCEEDED" } };
      },
    },
  });
  const trainer = client("TrainerService", server.address, { retry: { maxAttempts: 1 } });
  try {
    const inFlight = trainer.unary("GetJob", { job_id: "train-1" });
    await handlerStarted;
    const stopping = server.shutdown("test");
    assert(server.stopping.aborted);
    const late = client("TrainerService", server.address, { retry: { maxAttempts: 1 } });
    const refused = await assertRejects(() => late.unary("GetJob", { job_id: "x" }, { deadlineMs: 3000 }));
    late.close();
    assert(["UNAVAILABLE", "DEADLINE_EXCEEDED"].includes(codeOf(refused)), String(refused));
    assertEquals((await inFlight).job.state, "JOB_STATE_SUCCEEDED");
    await stopping;
    await server.finished;
  } finally {
    trainer.close();
  }
});

Deno.test("shutdown() cuts calls still running after the grace period and aborts their signal", async () => {
  let aborted = false;
  const server = await serve({
    ...quiet,
    service: "TrainerService",
    shutdownGraceMs: 200,
    handlers: {
      WatchJob: async function* (_request, ctx) {
        ctx.signal.addEventListener("abort", () => aborted = true);
        yield { event: { seq: 1 } };
        // A watch that never ends by itself: only the server's cut stops it.
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
      },
    },
  });
  const trainer = client("TrainerService", server.address, { retry: { maxAttempts: 1 } });
  try {
    const events: Message[] = [];
    const watching = (async () => {
      for await (const r of trainer.serverStream("WatchJob", { job_id: "t" })) events.push(r);
    })().catch((e) => e);
    while (events.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    const before = Date.now();
    await server.shutdown();
    assert(Date.now() - before < 3000, "the grace period bounds the drain");
    assert(aborted, "the handler's signal was aborted");
    await watching;
  } finally {
    trainer.close();
  }
});

Deno.test("client() deadline: a slow handler fails DEADLINE_EXCEEDED and its ctx.signal aborts", async () => {
  let signalled!: () => void;
  const handlerSawAbort = new Promise<void>((resolve) => signalled = resolve);
  const server = await serve({
    ...quiet,
    service: "TokenizerService",
    handlers: {
      GetJob: (_request, ctx) =>
        new Promise((_resolve, reject) => {
          ctx.signal.addEventListener("abort", () => {
            signalled();
            reject(ctx.signal.reason);
          });
        }),
    },
  });
  const tokenizer = client("TokenizerService", server.address);
  try {
    const error = await assertRejects(() => tokenizer.unary("GetJob", { job_id: "x" }, { deadlineMs: 200 }));
    assertEquals(codeOf(error), "DEADLINE_EXCEEDED");
    await handlerSawAbort;
  } finally {
    tokenizer.close();
    await server.shutdown();
  }
});

Deno.test("TLS: a client trusting the service's certificate connects and calls", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const openssl = new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        `${dir}/key.pem`,
        "-out",
        `${dir}/cert.pem`,
      ],
      stdout: "null",
      stderr: "null",
    });
    let made = false;
    try {
      made = (await openssl.output()).success;
    } catch {
      made = false;
    }
    if (!made) {
      console.warn("openssl is not available: TLS part skipped");
      return;
    }
    const cert = await Deno.readFile(`${dir}/cert.pem`);
    const server = await serve({
      ...quiet,
      service: "TokenizerService",
      tls: { cert, key: await Deno.readFile(`${dir}/key.pem`) },
      maxMessageBytes: 64 * 1024,
      handlers: { Tokenize: ({ inputs }) => ({ encodings: inputs.map(() => ({ ids: [1] })) }) },
    });
    // An IP address, as the fleet gives: the client must not use it as the TLS server name (Deno refuses).
    const secure = client("TokenizerService", `127.0.0.1:${server.port}`, { tls: { ca: cert } });
    try {
      const response = await secure.unary("Tokenize", { vocab: "v", inputs: [{ text: "a" }] });
      assertEquals(response.encodings.length, 1);
      const tooBig = await assertRejects(() =>
        secure.unary("Tokenize", { vocab: "v", inputs: [{ text: "x".repeat(100_000) }] })
      );
      assertEquals(codeOf(tooBig), "RESOURCE_EXHAUSTED");
      assertEquals(grpcCodeOf(tooBig), GrpcStatus.RESOURCE_EXHAUSTED);
    } finally {
      secure.close();
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve() maxMessageBytes: an oversized request fails RESOURCE_EXHAUSTED, the service stays up", async () => {
  const server = await serve({
    ...quiet,
    service: "TokenizerService",
    maxMessageBytes: 64 * 1024,
    handlers: { Tokenize: ({ inputs }) => ({ encodings: inputs.map(() => ({ ids: [1] })) }) },
  });
  const tokenizer = client("TokenizerService", server.address);
  try {
    const tooBig = await assertRejects(() =>
      tokenizer.unary("Tokenize", { vocab: "v", inputs: [{ text: "x".repeat(100_000) }] })
    );
    assertEquals(codeOf(tooBig), "RESOURCE_EXHAUSTED");
    assertEquals(
      (await tokenizer.unary("Tokenize", { vocab: "v", inputs: [{ text: "a" }] })).encodings.length,
      1,
    );
  } finally {
    tokenizer.close();
    await server.shutdown();
  }
});

Deno.test("a caller breaking out of a server stream or a bidirectional stream early: no uncaught CANCELLED, the server's handler stops", async () => {
  let serverStopped = 0;
  const server = await serve({
    ...quiet,
    service: "TokenizerService",
    handlers: {
      WatchJob: async function* ({ job_id }, ctx) {
        try {
          for (let seq = 1; !ctx.signal.aborted; seq++) {
            yield { event: { job_id, seq, state: "JOB_STATE_RUNNING" } };
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        } finally {
          serverStopped++;
        }
      },
      TokenizeStream: async function* (requests) {
        try {
          for await (const request of requests) {
            yield { id: request.id, encoding: { tokens: [...request.input.text] } };
          }
        } finally {
          serverStopped++;
        }
      },
    },
  });
  async function* endless() {
    for (let i = 0;; i++) {
      yield { id: String(i), vocab: "v", input: { text: "ab" } };
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  const tokenizer = client("TokenizerService", server.address);
  try {
    for (let round = 0; round < 3; round++) {
      for await (const event of tokenizer.serverStream("WatchJob", { job_id: "j" })) {
        if (event.event.seq === 2) break;
      }
      for await (const answer of tokenizer.bidi("TokenizeStream", endless())) {
        if (answer.id === "1") break;
      }
    }
    // The CANCELLED each break causes would surface here (an uncaught error fails the test) once it arrives.
    const until = Date.now() + 5_000;
    while (serverStopped < 6 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
    assertEquals(serverStopped, 6, "every handler saw its call end");
  } finally {
    tokenizer.close();
    await server.shutdown();
  }
});

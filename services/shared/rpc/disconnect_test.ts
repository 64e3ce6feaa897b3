/**
 * Clients that vanish mid-call must never take a server down. Deno's HTTP/2 (nghttp2) aborted two services
 * right after a client disconnected (denoland/deno#36788: an assertion while a GOAWAY closes streams).
 * Here a real service runs as a child process, so an abort shows as its exit code, while clients hammer it
 * for a bounded time: calls cut by a socket destroyed mid-stream, watches cancelled, channels closed after
 * many finished calls (the GOAWAY path), uploads abandoned half-way, garbage after the HTTP/2 preface.
 */
import { assert, assertEquals } from "@std/assert";
import http2 from "node:http2";
import { Buffer } from "node:buffer";
import { fromFileUrl } from "@std/path";
import { client } from "./client.ts";

const SERVER = fromFileUrl(new URL("./_disconnect_server.ts", import.meta.url));
/** Long enough for thousands of disconnects; BERTFORGE_HAMMER_MS runs it longer by hand. */
const HAMMER_MS = Number(Deno.env.get("BERTFORGE_HAMMER_MS") ?? 15_000);
const SERVICE = "/bertforge.v1.TokenizerService";

/** A gRPC message frame: uncompressed flag, big-endian length, payload. */
function grpcFrame(payload: Uint8Array = new Uint8Array()): Buffer {
  const frame = Buffer.alloc(5 + payload.length);
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, 5);
  return frame;
}

function h2Call(session: http2.ClientHttp2Session, method: string, end: boolean) {
  const stream = session.request({
    ":method": "POST",
    ":path": `${SERVICE}/${method}`,
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.on("error", () => {});
  stream.on("data", () => {});
  if (end) stream.end(grpcFrame());
  else stream.write(grpcFrame(new Uint8Array(16)));
  return stream;
}

function h2Connect(address: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.on("error", () => {});
    session.once("connect", () => resolve(session));
    session.once("error", reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One client misbehaving in one of the ways seen in the wild; every error on the client side is expected. */
const PATTERNS: Record<string, (address: string) => Promise<void>> = {
  // Streams open, socket destroyed under them: no GOAWAY, no RST_STREAM.
  async destroyMidStream(address) {
    const session = await h2Connect(address);
    for (let i = 0; i < 5; i++) h2Call(session, "WatchJob", true);
    h2Call(session, "UploadCorpus", false);
    await sleep(Math.random() * 20);
    session.socket.destroy();
  },
  // Many finished calls, then GOAWAY from the client while a watch streams: #36788's trigger, mirrored.
  async goawayAfterCalls(address) {
    const session = await h2Connect(address);
    const done = Array.from(
      { length: 15 },
      () => new Promise<void>((resolve) => h2Call(session, "GetVocab", true).on("close", resolve)),
    );
    await Promise.all(done);
    h2Call(session, "WatchJob", true);
    await sleep(Math.random() * 10);
    session.close();
    await sleep(5);
    session.destroy();
  },
  // Streams reset one by one (a client cancelling), then the session destroyed.
  async cancelStreams(address) {
    const session = await h2Connect(address);
    const streams = Array.from(
      { length: 8 },
      (_, i) => h2Call(session, i % 2 ? "WatchJob" : "GetVocab", true),
    );
    await sleep(Math.random() * 10);
    for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
    await sleep(Math.random() * 5);
    session.destroy();
  },
  // The real client: unary calls, a watch broken off early, then the channel closed.
  async grpcClient(address) {
    const tokenizer = client("TokenizerService", address, { retry: { maxAttempts: 1 }, authToken: "" });
    try {
      for (let i = 0; i < 3; i++) await tokenizer.unary("GetVocab", { name: "zh" });
      let seen = 0;
      for await (const _ of tokenizer.serverStream("WatchJob", { job_id: "j" })) if (++seen >= 3) break;
    } catch {
      // a call cut by the server's load is not what this test is about
    } finally {
      tokenizer.close();
    }
  },
  // Bytes that are not HTTP/2 after a good preface, then a hang-up.
  async garbage(address) {
    const [host, port] = address.split(":");
    const conn = await Deno.connect({ hostname: host!, port: Number(port) });
    try {
      await conn.write(new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
      await conn.write(crypto.getRandomValues(new Uint8Array(64)));
    } catch {
      // the server may hang up first
    } finally {
      conn.close();
    }
  },
};

Deno.test({
  name:
    "a service survives clients that disconnect mid-call, cancel streams, and send GOAWAY, for a bounded time",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER],
    stdout: "piped",
    stderr: "piped",
    env: { BERTFORGE_LOG_LEVEL: "error" },
  }).spawn();
  let stderr = "";
  const errors = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
  })();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    first += value;
  }
  let exited: Deno.CommandStatus | undefined;
  child.status.then((status) => (exited = status));
  try {
    const { address } = JSON.parse(first);
    const counts: Record<string, number> = {};
    const until = Date.now() + HAMMER_MS;
    const names = Object.keys(PATTERNS);
    await Promise.all(Array.from({ length: 6 }, async (_, worker) => {
      for (let i = worker; Date.now() < until && !exited; i++) {
        const name = names[i % names.length]!;
        // A client stuck on a dead server must not hang the test: the exit check below says what happened.
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          PATTERNS[name]!(address).catch(() => {}),
          new Promise((resolve) => (timer = setTimeout(resolve, 5000))),
        ]);
        clearTimeout(timer);
        counts[name] = (counts[name] ?? 0) + 1;
      }
    }));
    assert(
      exited === undefined,
      `the server died (${JSON.stringify(exited)}) after ${JSON.stringify(counts)}:\n${stderr}`,
    );

    // Still serving, to a well-behaved client.
    const tokenizer = client("TokenizerService", address, { authToken: "" });
    try {
      const { vocab } = await tokenizer.unary("GetVocab", { name: "after" });
      assertEquals(vocab.name, "after");
    } finally {
      tokenizer.close();
    }
    console.log(`disconnects survived: ${JSON.stringify(counts)}`);
  } finally {
    if (!exited) child.kill("SIGTERM");
    const status = await child.status;
    await errors;
    await lines.cancel().catch(() => {});
    assert(
      status.success || status.signal === "SIGTERM",
      `server exit ${JSON.stringify(status)}:\n${stderr}`,
    );
    assert(!/Assertion|panicked/.test(stderr), stderr);
  }
});

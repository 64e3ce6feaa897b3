/**
 * `deno run -A tests/support/raw_grpc_fuzz.ts ADDRESS SEED CALLS [SERVICE METHOD,...]`: raw random bytes
 * straight onto a service's gRPC methods (InferenceService's unary ones by default), one call after another;
 * a method written `stream:Name` is client streaming (an upload) and gets one to three random messages. From
 * a plain grpc-js channel that is closed at the end; prints one JSON array of `{ method, code, details }`.
 * The fuzz tests (services/inference/service_test.ts, services/tokenizer/service_test.ts) run it in its own
 * process: closing an HTTP/2 session can abort the Deno process inside nghttp2 (denoland/deno#36788, deno
 * 2.9.6), and an abort of this client then shows up as a clear test failure instead of killing the test
 * process, while the server still meets a real remote client going away. Same random generator as the
 * tests, continued from the seed they pass.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";

const [address, seedArg, callsArg, serviceArg, methodsArg] = Deno.args;
if (!address || seedArg === undefined) {
  console.error("usage: raw_grpc_fuzz.ts ADDRESS SEED [CALLS] [SERVICE METHOD,...]");
  Deno.exit(2);
}
let seed = Number(seedArg);
const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(random() * 256));
const service = serviceArg ?? "InferenceService";
const methods = methodsArg?.split(",") ?? [
  "Classify",
  "Tag",
  "FillMask",
  "Embed",
  "ZeroShot",
  "ClassifyBatch",
  "Tokenize",
  "ModelInfo",
  "Load",
];

const raw = new grpc.Client(address, grpc.credentials.createInsecure());
const results: { method: string; code: number; details: string }[] = [];
for (let i = 0; i < Number(callsArg ?? 60); i++) {
  const method = methods[i % methods.length]!;
  if (method.startsWith("stream:")) {
    const name = method.slice("stream:".length);
    results.push(
      await new Promise((resolve) => {
        const call = raw.makeClientStreamRequest(
          `/bertforge.v1.${service}/${name}`,
          (b: Buffer) => b,
          (b: Buffer) => b,
          { deadline: Date.now() + 10_000 },
          (error) => resolve({ method, code: error?.code ?? 0, details: error?.details ?? "" }),
        );
        const messages = 1 + Math.floor(random() * 3);
        for (let m = 0; m < messages; m++) call.write(Buffer.from(randomBytes(Math.floor(random() * 64))));
        call.end();
      }),
    );
    continue;
  }
  results.push(
    await new Promise((resolve) => {
      raw.makeUnaryRequest(
        `/bertforge.v1.${service}/${method}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from(randomBytes(Math.floor(random() * 64))),
        { deadline: Date.now() + 10_000 },
        (error) => resolve({ method, code: error?.code ?? 0, details: error?.details ?? "" }),
      );
    }),
  );
}
raw.close();
console.log(JSON.stringify(results));

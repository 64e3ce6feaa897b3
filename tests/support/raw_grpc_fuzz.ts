/**
 * `deno run -A tests/support/raw_grpc_fuzz.ts ADDRESS SEED CALLS`: raw random bytes straight onto the
 * InferenceService gRPC methods, one call after another, from a plain grpc-js channel that is closed at the
 * end; prints one JSON array of `{ method, code, details }`. The fuzz test in services/inference/service_test.ts
 * runs it in its own process: closing an HTTP/2 session can abort the Deno process inside nghttp2
 * (denoland/deno#36788, deno 2.9.6), and an abort of this client then shows up as a clear test failure
 * instead of killing the test process, while the server still meets a real remote client going away.
 * Same random generator as the test, continued from the seed it passes.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";

const [address, seedArg, callsArg] = Deno.args;
if (!address || seedArg === undefined) {
  console.error("usage: raw_grpc_fuzz.ts ADDRESS SEED [CALLS]");
  Deno.exit(2);
}
let seed = Number(seedArg);
const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(random() * 256));
const methods = [
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
  results.push(
    await new Promise((resolve) => {
      raw.makeUnaryRequest(
        `/bertforge.v1.InferenceService/${method}`,
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

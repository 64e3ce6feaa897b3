/**
 * A TokenizerService on loopback for disconnect_test.ts, run as a child process so that an abort inside the
 * HTTP/2 stack (denoland/deno#36788) shows as an exit code instead of killing the test. Prints
 * `{"address":"127.0.0.1:N"}` once it listens; stops on SIGTERM.
 */
import { serve } from "./serve.ts";

const server = await serve({
  service: "TokenizerService",
  port: 0,
  shutdownGraceMs: 500,
  handlers: {
    GetVocab: ({ name }) => ({ vocab: { name, size: 7 } }),
    // A job watch that never ends by itself: clients cancel it or vanish under it.
    async *WatchJob(_request, ctx) {
      for (let seq = 1; !ctx.signal.aborted && !ctx.stopping.aborted; seq++) {
        yield { event: { seq, unit: "x".repeat(seq % 7 === 0 ? 64 * 1024 : 16) } };
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    },
    async UploadCorpus(requests) {
      let files = 0;
      for await (const _request of requests) files++;
      return { corpus: { name: "c" }, files };
    },
  },
});
console.log(JSON.stringify({ address: server.address }));
await server.finished;

/**
 * gRPC for bertforge: load the protos once, serve a service, call one.
 *
 * A service (see services/tokenizer/main.ts) passes handlers by method name; the proto decides whether a
 * handler is unary or streaming. Throw the typed errors of services/shared/errors.ts: each becomes exactly
 * one gRPC status with its message (anything else is INTERNAL and logged). Health, reflection, auth, TLS,
 * tracing and graceful shutdown come with serve().
 *
 * ```ts
 * import { client, serve, watchJob } from "../shared/rpc/mod.ts";
 * import { loadSettings } from "../shared/config/mod.ts";
 * import { NotFound } from "../shared/errors.ts";
 *
 * const server = await serve({
 *   service: "TokenizerService",
 *   settings: loadSettings("tokenizer"), // host, port, auth token, TLS from flags and env
 *   handlers: {
 *     GetVocab: async ({ name }, ctx) => {
 *       if (name !== "zh") throw new NotFound(`vocab "${name}" not found`);
 *       return { vocab: { name, size: 21128 } };
 *     },
 *     // server streaming: an async generator; stop when the caller goes (ctx.signal)
 *     WatchJob: async function* ({ job_id }, ctx) {
 *       yield { event: { job_id, seq: 1, state: "JOB_STATE_SUCCEEDED" } };
 *     },
 *   },
 * });
 *
 * const tokenizer = client("TokenizerService", server.address); // deadlines, retries, token, tracing
 * const { vocab } = await tokenizer.unary("GetVocab", { name: "zh" });
 * for await (const event of watchJob(tokenizer, "vocab-1")) console.log(event.state);
 * tokenizer.close();
 * await server.shutdown(); // what SIGTERM does: drain, then stop
 * ```
 *
 * A service's main.ts ends with `if (import.meta.main) await runMain("tokenizer", start)` (from `./main.ts`
 * here): settings from flags and env (exit 2 on a bad one), SIGTERM/SIGINT drain, stop when fleet's pipe
 * closes. Auth: set BERTFORGE_AUTH_TOKEN on both sides (health and reflection stay open). TLS: set
 * BERTFORGE_TLS_CERT/KEY on the service and pass `tls: { caFile }` (or BERTFORGE_TLS_CA in bertctl) to
 * clients; loopback IPs are checked as `localhost` (BERTFORGE_TLS_SERVER_NAME overrides).
 *
 * @module
 */
export * from "./load.ts";
export * from "./status.ts";
export * from "./health.ts";
export * from "./serve.ts";
export * from "./client.ts";
export * from "./streams.ts";
export * from "./paging.ts";

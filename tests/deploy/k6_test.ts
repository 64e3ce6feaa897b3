/**
 * deploy/k6 scripts run here without k6: their k6 imports are swapped for recording stand-ins, the module is
 * loaded as an ES module with a given __ENV, and one iteration runs against canned responses. This checks they
 * parse, read HOST/MODEL/TOKEN from the environment, call the right endpoint and declare failing thresholds.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { ROOT } from "./_helm.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
type Recorded = { calls: Any[]; trends: Record<string, number[]>; counters: Record<string, number> };

// Stand-ins for the k6 modules; they record into globalThis.__k6 and answer with globalThis.__k6.reply.
const STUBS: Record<string, string> = {
  "k6":
    `export function check(v, sets) { for (const [n, f] of Object.entries(sets)) globalThis.__k6.checks[n] = f(v); return true; }`,
  "k6/http": `export default { post(url, body, params) { globalThis.__k6.calls.push({ url, body, params });
    return globalThis.__k6.reply; } };`,
  "k6/metrics": `export class Trend { constructor(n) { this.n = n; globalThis.__k6.trends[n] = []; }
    add(v) { globalThis.__k6.trends[this.n].push(v); } }
  export class Counter { constructor(n) { this.n = n; globalThis.__k6.counters[n] = 0; }
    add(v) { globalThis.__k6.counters[this.n] += v; } }`,
  "k6/net/grpc": `class Client { connect(addr, opts) { globalThis.__k6.calls.push({ connect: addr, opts }); }
    invoke(method, msg, params) { globalThis.__k6.calls.push({ method, msg, params }); return globalThis.__k6.reply; }
    close() {} }
  export default { Client, StatusOK: 0, StatusResourceExhausted: 8 };`,
};

const b64 = (text: string) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

let loads = 0;
/** Loads a k6 script with the given __ENV; returns its exports and what the stand-ins recorded. */
async function load(
  file: string,
  env: Record<string, string>,
  reply: Any,
): Promise<{ mod: Any; rec: Recorded }> {
  let src = await Deno.readTextFile(`${ROOT}deploy/k6/${file}`);
  src = src.replace(/from "(k6[^"]*)"/g, (_, m: string) => {
    assert(STUBS[m], `${file} imports ${m}, which has no stand-in here`);
    return `from "data:text/javascript;base64,${b64(STUBS[m]!)}"`;
  });
  const rec = { calls: [], trends: {}, counters: {}, checks: {}, reply };
  Object.assign(globalThis, { __ENV: env, __ITER: 0, __k6: rec });
  // A unique trailer makes each load a fresh module instance with its own init-time reading of __ENV.
  src += `\n// load ${loads++}\n`;
  const url = `data:text/javascript;base64,${b64(src)}`;
  return { mod: await import(url), rec };
}

Deno.test("inference_http.js posts to HOST's classify route with the token and records server timings", async () => {
  const reply = {
    status: 200,
    json: (path: string) => (path === "label" ? "positive" : undefined),
    headers: { "X-Queue-Time": "3", "X-Inference-Time": "12" },
  };
  const { mod, rec } = await load("inference_http.js", {
    HOST: "10.0.0.1:50055",
    MODEL: "senti",
    TOKEN: "t0k",
  }, reply);
  mod.default();
  assertEquals(rec.calls.length, 1);
  assertEquals(rec.calls[0].url, "http://10.0.0.1:50055/v1/models/senti:classify");
  assertEquals(rec.calls[0].params.headers.authorization, "Bearer t0k");
  assert(typeof JSON.parse(rec.calls[0].body).text === "string");
  assertEquals(rec.trends.queue_time, [3]);
  assertEquals(rec.trends.inference_time, [12]);
  assertEquals((rec as Any).checks["has a label"], true);
  assertEquals(mod.options.thresholds.http_req_failed, ["rate==0"]);
  assertMatch(mod.options.thresholds.http_req_duration[0], /^p\(99\)<\d+$/);
});

Deno.test("inference_http.js refuses to start without HOST or MODEL", async () => {
  await assertRejects(() => load("inference_http.js", { MODEL: "m" }, null), Error, "HOST is required");
  await assertRejects(() => load("inference_http.js", { HOST: "h:1" }, null), Error, "MODEL is required");
});

Deno.test("inference_grpc.js connects with reflection and calls Classify with the model and token", async () => {
  const reply = { status: 0, message: { result: { label: "negative" } } };
  const { mod, rec } = await load(
    "inference_grpc.js",
    { HOST: "svc:50054", MODEL: "senti", TOKEN: "t0k" },
    reply,
  );
  mod.default();
  assertEquals(rec.calls[0].connect, "svc:50054");
  assertEquals(rec.calls[0].opts.reflect, true);
  assertEquals(rec.calls[0].opts.plaintext, true);
  assertEquals(rec.calls[1].method, "bertforge.v1.InferenceService/Classify");
  assertEquals(rec.calls[1].msg.model, "senti");
  assertEquals(rec.calls[1].params.metadata.authorization, "Bearer t0k");
  assertEquals(rec.counters.grpc_failed, 0);
  assertEquals(mod.options.thresholds.grpc_failed, ["count==0"]);

  // A RESOURCE_EXHAUSTED answer counts as overload and as a failure, which fails the run's threshold.
  const over = await load("inference_grpc.js", { HOST: "svc:50054", TLS: "1" }, { status: 8, message: null });
  over.mod.default();
  assertEquals(over.rec.calls[0].opts.plaintext, false);
  assertEquals([over.rec.counters.resource_exhausted, over.rec.counters.grpc_failed], [1, 1]);
});

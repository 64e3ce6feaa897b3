// k6 load test of InferenceService.Classify over gRPC against a deployed fleet. The service serves reflection,
// so no proto files are needed here.
//   HOST=127.0.0.1:50054 MODEL=sentiment k6 run deploy/k6/inference_grpc.js
// Environment: HOST (host:port of the gRPC port, required), MODEL (empty: the default model), TLS=1 (TLS
// without verification, for self-signed certificates), TOKEN (bearer token when auth is on), VUS, DURATION,
// P99_MS. Fails the run on any non-OK status or a p99 over P99_MS.
import { check } from "k6";
import grpc from "k6/net/grpc";
import { Counter, Trend } from "k6/metrics";

const host = __ENV.HOST;
if (!host) throw new Error("HOST is required, e.g. HOST=127.0.0.1:50054");
const model = __ENV.MODEL || "";
const tls = __ENV.TLS === "1";
const p99 = Number(__ENV.P99_MS || 250);
const method = "bertforge.v1.InferenceService/Classify";

const classifyTime = new Trend("classify_time", true);
const overloaded = new Counter("resource_exhausted");
const failed = new Counter("grpc_failed");

const texts = [
  "这家酒店位置很好，服务也周到，下次还会再来。",
  "房间太小，隔音很差，一晚上都没睡好。",
  "The battery lasts two days and the screen is sharp, but the speaker is weak.",
  "Terrible.",
  "物流很快，包装完好，书的纸张质量不错，内容也很有意思，推荐给喜欢历史的朋友。".repeat(3),
];

export const options = {
  scenarios: {
    steady: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS || 16),
      duration: __ENV.DURATION || "30s",
    },
  },
  thresholds: {
    grpc_req_duration: [`p(99)<${p99}`],
    grpc_failed: ["count==0"],
    checks: ["rate==1"],
  },
};

const client = new grpc.Client();
const metadata = __ENV.TOKEN ? { authorization: `Bearer ${__ENV.TOKEN}` } : {};

export default function () {
  // One connection per VU, opened on its first iteration (connect is not allowed in the init context).
  if (__ITER === 0) client.connect(host, { plaintext: !tls, reflect: true, timeout: "10s" });
  const text = texts[Math.floor(Math.random() * texts.length)];
  const started = Date.now();
  const res = client.invoke(method, { model, text }, { metadata, timeout: "5s" });
  classifyTime.add(Date.now() - started);
  if (res.status === grpc.StatusResourceExhausted) overloaded.add(1);
  if (res.status !== grpc.StatusOK) failed.add(1);
  check(res, {
    "status is OK": (r) => r.status === grpc.StatusOK,
    "has a label": (r) => r.status === grpc.StatusOK && typeof r.message.result.label === "string",
  });
}

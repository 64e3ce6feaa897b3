// k6 load test of the inference service's HTTP/JSON API against a deployed fleet.
//   HOST=127.0.0.1:50055 MODEL=sentiment k6 run deploy/k6/inference_http.js
// Environment: HOST (host:port of the HTTP port, required), MODEL (model name, required), SCHEME (http or
// https), TOKEN (bearer token when auth is on), ENDPOINT (path; {model} is replaced), VUS, DURATION, P99_MS.
// Fails the run on any failed request or a p99 over P99_MS; the server's timing headers become Trends.
import { check } from "k6";
import http from "k6/http";
import { Counter, Trend } from "k6/metrics";

const host = __ENV.HOST;
if (!host) throw new Error("HOST is required, e.g. HOST=127.0.0.1:50055");
const scheme = __ENV.SCHEME || "http";
const model = __ENV.MODEL;
if (!model) throw new Error("MODEL is required, e.g. MODEL=sentiment (see `bertctl models list`)");
const endpoint = (__ENV.ENDPOINT || "/v1/models/{model}:classify").replace(
  "{model}",
  encodeURIComponent(model),
);
const url = `${scheme}://${host}${endpoint}`;
const p99 = Number(__ENV.P99_MS || 250);

const queueTime = new Trend("queue_time", true);
const inferenceTime = new Trend("inference_time", true);
const overloaded = new Counter("overloaded_429");

// Short and long Chinese and English reviews, so batches mix lengths as real traffic does.
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
    http_req_failed: ["rate==0"],
    http_req_duration: [`p(99)<${p99}`],
    checks: ["rate==1"],
  },
};

const params = {
  headers: Object.assign(
    { "content-type": "application/json" },
    __ENV.TOKEN ? { authorization: `Bearer ${__ENV.TOKEN}` } : {},
  ),
  tags: { name: "classify" },
};

export default function () {
  const text = texts[Math.floor(Math.random() * texts.length)];
  const res = http.post(url, JSON.stringify({ text }), params);
  if (res.status === 429) overloaded.add(1);
  check(res, {
    "status is 200": (r) => r.status === 200,
    "has a label": (r) => r.status === 200 && typeof (r.json("label") ?? r.json("result.label")) === "string",
  });
  const q = Number(res.headers["X-Queue-Time"]);
  if (Number.isFinite(q)) queueTime.add(q);
  const inf = Number(res.headers["X-Inference-Time"]);
  if (Number.isFinite(inf)) inferenceTime.add(inf);
}

import { assertEquals, assertThrows } from "@std/assert";
import { InvalidArgument } from "../errors.ts";
import { createLogger } from "./log.ts";
import { loadSettings, storeEnv } from "./settings.ts";

const env = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("loadSettings() derives ports from the port base, flags beating variables", () => {
  const defaults = loadSettings("sharding", { args: [], env: env({}) });
  assertEquals(defaults.port, 50052);
  assertEquals(defaults.host, "127.0.0.1");
  assertEquals(defaults.peers.tokenizer, "127.0.0.1:50051");
  assertEquals(defaults.peers.inferenceHttp, "http://127.0.0.1:50055");
  assertEquals(defaults.store, { dir: ".bertforge/store" });

  const fromEnv = loadSettings("sharding", {
    args: [],
    env: env({ BERTFORGE_PORT: "7000", BERTFORGE_TOKENIZER_ADDR: "tok:9", BERTFORGE_HOST: "0.0.0.0" }),
  });
  assertEquals([fromEnv.port, fromEnv.peers.tokenizer, fromEnv.host], [7000, "tok:9", "0.0.0.0"]);

  const flagBase = loadSettings("sharding", {
    args: ["--port-base", "60000"],
    env: env({ BERTFORGE_PORT: "7000", BERTFORGE_TOKENIZER_ADDR: "tok:9" }),
  });
  assertEquals([flagBase.port, flagBase.peers.tokenizer], [60002, "127.0.0.1:60001"]);

  const flagPort = loadSettings("inference", {
    args: ["--port=61000", "--http-port", "61001"],
    env: env({}),
  });
  assertEquals([flagPort.port, flagPort.httpPort], [61000, 61001]);
});

Deno.test("loadSettings() reads the store from --store, --s3 (credentials in the URL) or the variables", () => {
  assertEquals(loadSettings("tokenizer", { args: ["--store", "/tmp/s"], env: env({}) }).store, {
    dir: "/tmp/s",
  });
  assertEquals(
    loadSettings("tokenizer", { args: ["--s3", "http://ak:sk@minio:9000/bkt"], env: env({}) }).store,
    {
      s3: { url: "http://minio:9000", bucket: "bkt", accessKey: "ak", secretKey: "sk", region: "us-east-1" },
    },
  );
  const s3 = loadSettings("tokenizer", {
    args: [],
    env: env({
      BERTFORGE_S3_URL: "http://m:9000",
      BERTFORGE_S3_ACCESS_KEY: "a",
      BERTFORGE_S3_SECRET_KEY: "b",
    }),
  }).store;
  assertEquals(s3, {
    s3: { url: "http://m:9000", bucket: "bertforge", accessKey: "a", secretKey: "b", region: "us-east-1" },
  });
  assertEquals(storeEnv(s3).BERTFORGE_S3_ACCESS_KEY, "a");
  assertThrows(
    () => loadSettings("tokenizer", { args: ["--s3", "http://m:9000"], env: env({}) }),
    InvalidArgument,
    "credentials",
  );
  assertThrows(
    () => loadSettings("tokenizer", { args: ["--store", "x", "--s3", "http://a:b@m:1"], env: env({}) }),
    InvalidArgument,
    "exclusive",
  );
});

Deno.test("loadSettings() names the flag or variable that is wrong", () => {
  assertThrows(
    () => loadSettings("trainer", { args: ["--port", "99999"], env: env({}) }),
    InvalidArgument,
    "--port",
  );
  assertThrows(
    () => loadSettings("trainer", { args: [], env: env({ BERTFORGE_PORT: "x" }) }),
    InvalidArgument,
    "BERTFORGE_PORT",
  );
  assertThrows(
    () => loadSettings("trainer", { args: ["--bogus"], env: env({}) }),
    InvalidArgument,
    "unknown flag --bogus",
  );
  assertThrows(
    () => loadSettings("trainer", { args: ["--log-level", "loud"], env: env({}) }),
    InvalidArgument,
    "--log-level",
  );
  assertThrows(
    () => loadSettings("trainer", { args: ["--tokenizer-addr", "nohost"], env: env({}) }),
    InvalidArgument,
    "host:port",
  );
  assertThrows(
    () => loadSettings("trainer", { args: [], env: env({ BERTFORGE_TLS_CERT: "c.pem" }) }),
    InvalidArgument,
    "BERTFORGE_TLS_KEY",
  );
  const extra = loadSettings("inference", {
    args: ["--max-batch-tokens", "4096"],
    env: env({}),
    extraFlags: { string: ["max-batch-tokens"] },
  });
  assertEquals(extra.flags["max-batch-tokens"], "4096");
});

Deno.test("createLogger() filters by level and formats fields", () => {
  const lines: string[] = [];
  const log = createLogger("svc", "info", (line) => lines.push(line));
  log.debug("hidden");
  log.info("listening", { port: 50051, path: "a b" });
  log.child("jobs").error("failed", { error: new Error("boom") });
  assertEquals(lines.length, 2);
  assertEquals(lines[0]!.replace(/^\S+ /, ""), `INFO  svc: listening port=50051 path="a b"`);
  assertEquals(lines[1]!.replace(/^\S+ /, ""), `ERROR svc.jobs: failed error="boom"`);
});

Deno.test("loadSettings() reads the auth token from a file, keeping it out of the process list", () => {
  const file = Deno.makeTempFileSync();
  try {
    Deno.writeTextFileSync(file, "s3cret-token\n");
    const none = () => undefined;
    assertEquals(
      loadSettings("trainer", { args: ["--auth-token-file", file], env: none }).authToken,
      "s3cret-token",
    );
    const env = (name: string) => (name === "BERTFORGE_AUTH_TOKEN_FILE" ? file : undefined);
    assertEquals(loadSettings("trainer", { args: [], env }).authToken, "s3cret-token");
    assertThrows(
      () => loadSettings("trainer", { args: ["--auth-token", "t", "--auth-token-file", file], env: none }),
      InvalidArgument,
      "give the auth token once",
    );
    Deno.writeTextFileSync(file, "\n");
    assertThrows(
      () => loadSettings("trainer", { args: ["--auth-token-file", file], env: none }),
      InvalidArgument,
      "is empty",
    );
  } finally {
    Deno.removeSync(file);
  }
});

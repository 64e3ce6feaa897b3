/**
 * Service settings, read in one place: command-line flags first, then environment variables (the names
 * of docs/conventions.md), then defaults. Every service's main.ts, `fleet` and `bertctl` use it, so a
 * flag means the same thing everywhere.
 *
 * | flag                      | environment                         | default                 |
 * |---------------------------|-------------------------------------|-------------------------|
 * | `--host`                  | `BERTFORGE_HOST`                    | `127.0.0.1`             |
 * | `--port`                  | `BERTFORGE_PORT`                    | port base + offset      |
 * | `--http-port`             | `BERTFORGE_HTTP_PORT`               | port base + 5           |
 * | `--port-base`             | `BERTFORGE_PORT_BASE`               | `50050`                 |
 * | `--store DIR`             | `BERTFORGE_STORE_DIR`               | `.bertforge/store`      |
 * | `--s3 URL`                | `BERTFORGE_S3_URL` (+ `_BUCKET`, `_ACCESS_KEY`, `_SECRET_KEY`, `_REGION`) | off |
 * | `--tokenizer-addr` ...    | `BERTFORGE_TOKENIZER_ADDR` ...      | `127.0.0.1:<base+n>`    |
 * | `--inference-http`        | `BERTFORGE_INFERENCE_HTTP`          | `http://127.0.0.1:<base+5>` |
 * | `--auth-token`            | `BERTFORGE_AUTH_TOKEN`              | none (no auth)          |
 * | `--auth-token-file`       | `BERTFORGE_AUTH_TOKEN_FILE`         | none; keeps it out of `ps` |
 * | `--tls-cert`, `--tls-key` | `BERTFORGE_TLS_CERT`, `BERTFORGE_TLS_KEY` | none (plaintext)  |
 * | `--tls-ca`                | `BERTFORGE_TLS_CA` (clients)        | system roots            |
 * | `--log-level`             | `BERTFORGE_LOG_LEVEL`               | `info`                  |
 * | `--backend`, `--threads`  | `BERTFORGE_BACKEND`, `BERTFORGE_THREADS` | `auto`, all cores  |
 * | `--shutdown-grace-ms`     | `BERTFORGE_SHUTDOWN_GRACE_MS`       | `10000`                 |
 * | `--max-upload-bytes`      | `BERTFORGE_MAX_UPLOAD_BYTES`        | 8 GiB (rpc/streams.ts)  |
 *
 * `--s3 URL` may carry credentials and bucket: `http://KEY:SECRET@minio:9000/bucket`.
 */
import { parseArgs } from "@std/cli";
import { InvalidArgument } from "../errors.ts";
import { type LogLevel, parseLogLevel } from "./log.ts";

/** The four services, by their folder name. */
export type ServiceKey = "tokenizer" | "sharding" | "trainer" | "inference";

export const SERVICE_KEYS: readonly ServiceKey[] = ["tokenizer", "sharding", "trainer", "inference"];

/** Port offsets from the port base (docs/conventions.md). */
export const PORT_OFFSETS: Record<ServiceKey | "inference_http", number> = {
  tokenizer: 1,
  sharding: 2,
  trainer: 3,
  inference: 4,
  inference_http: 5,
};

export const DEFAULT_PORT_BASE = 50050;
export const DEFAULT_HOST = "127.0.0.1";
export const DEFAULT_STORE_DIR = ".bertforge/store";

/** Where the store lives; the same shape `openStore()` of services/shared/store takes. */
export type StoreSettings =
  | { dir: string }
  | { s3: { url: string; bucket: string; accessKey: string; secretKey: string; region: string } };

export interface TlsSettings {
  /** PEM certificate chain file (servers). */
  certFile?: string;
  /** PEM private key file (servers). */
  keyFile?: string;
  /** PEM root certificates a client trusts; unset means the system roots. */
  caFile?: string;
}

export interface Peers {
  tokenizer: string;
  sharding: string;
  trainer: string;
  inference: string;
  /** Base URL of the inference HTTP API. */
  inferenceHttp: string;
}

export interface Settings {
  /** Bind address. */
  host: string;
  /** This service's gRPC port (0 when the settings are not for a service). */
  port: number;
  /** The inference HTTP port. */
  httpPort: number;
  portBase: number;
  store: StoreSettings;
  /** host:port of every service, for clients and for services that call each other. */
  peers: Peers;
  authToken: string | undefined;
  tls: TlsSettings | undefined;
  logLevel: LogLevel;
  backend: string;
  threads: number | undefined;
  shutdownGraceMs: number;
  /** Largest upload (corpus, data set, model import) a service takes; unset: DEFAULT_MAX_UPLOAD_BYTES. */
  maxUploadBytes?: number;
  /** Every parsed flag, including the extra ones a service declared. */
  flags: Record<string, unknown>;
  /** Positional arguments. */
  args: string[];
}

export interface LoadSettingsOptions {
  /** @default Deno.args */
  args?: string[];
  /** @default Deno.env.get */
  env?: (name: string) => string | undefined;
  /** Extra flags a service accepts beyond the common ones (its own tuning knobs). */
  extraFlags?: { string?: string[]; boolean?: string[] };
  /** Accept flags nobody declared instead of failing (bertctl parses its own). @default false */
  allowUnknown?: boolean;
}

const STRING_FLAGS = [
  "host",
  "port",
  "http-port",
  "port-base",
  "store",
  "s3",
  "s3-bucket",
  "s3-access-key",
  "s3-secret-key",
  "s3-region",
  "tokenizer-addr",
  "sharding-addr",
  "trainer-addr",
  "inference-addr",
  "inference-http",
  "auth-token",
  "auth-token-file",
  "tls-cert",
  "tls-key",
  "tls-ca",
  "log-level",
  "backend",
  "threads",
  "shutdown-grace-ms",
  "max-upload-bytes",
];

const PEER_ENV: Record<ServiceKey, string> = {
  tokenizer: "BERTFORGE_TOKENIZER_ADDR",
  sharding: "BERTFORGE_SHARDING_ADDR",
  trainer: "BERTFORGE_TRAINER_ADDR",
  inference: "BERTFORGE_INFERENCE_ADDR",
};

function defaultEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function parsePort(value: string, field: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgument(`${field} must be a port number 0..65535: got "${value}"`);
  }
  return port;
}

function parsePositiveInt(value: string, field: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n <= 0) {
    throw new InvalidArgument(`${field} must be a positive integer: got "${value}"`);
  }
  return n;
}

/** `host:port` check, so a typo fails at start rather than as UNAVAILABLE on the first call. */
export function checkAddress(value: string, field: string): string {
  const match = /^(\[[0-9a-fA-F:]+\]|[^:\s/]+):(\d+)$/.exec(value);
  if (!match || Number(match[2]) > 65535) {
    throw new InvalidArgument(`${field} must be host:port (e.g. 127.0.0.1:50051): got "${value}"`);
  }
  return value;
}

/**
 * Store settings from `--s3 URL` (credentials and bucket may sit in the URL) or `--store DIR`, then the
 * BERTFORGE_S3_* / BERTFORGE_STORE_DIR variables, then the embedded default folder.
 */
export function resolveStore(
  flags: Record<string, unknown>,
  env: (name: string) => string | undefined,
): StoreSettings {
  const str = (
    key: string,
  ) => (typeof flags[key] === "string" && flags[key] !== "" ? flags[key] as string : undefined);
  if (str("s3") && str("store")) {
    throw new InvalidArgument("--store and --s3 are exclusive: give one store");
  }
  const s3Raw = str("s3") ?? (str("store") ? undefined : env("BERTFORGE_S3_URL") || undefined);
  if (s3Raw) {
    let url: URL;
    try {
      url = new URL(s3Raw);
    } catch {
      throw new InvalidArgument(`--s3 must be a URL like http://minio:9000: got "${s3Raw}"`);
    }
    const accessKey = str("s3-access-key") ?? (decodeURIComponent(url.username) ||
      env("BERTFORGE_S3_ACCESS_KEY") || "");
    const secretKey = str("s3-secret-key") ?? (decodeURIComponent(url.password) ||
      env("BERTFORGE_S3_SECRET_KEY") || "");
    const pathBucket = url.pathname.replace(/^\/+|\/+$/g, "");
    const bucket = str("s3-bucket") ?? (pathBucket || env("BERTFORGE_S3_BUCKET") || "bertforge");
    const region = str("s3-region") ?? (env("BERTFORGE_S3_REGION") || "us-east-1");
    if (!accessKey || !secretKey) {
      throw new InvalidArgument(
        "S3 credentials are missing: set BERTFORGE_S3_ACCESS_KEY and BERTFORGE_S3_SECRET_KEY " +
          "(or put them in the URL, http://KEY:SECRET@host:9000)",
      );
    }
    return { s3: { url: `${url.protocol}//${url.host}`, bucket, accessKey, secretKey, region } };
  }
  return { dir: str("store") ?? (env("BERTFORGE_STORE_DIR") || DEFAULT_STORE_DIR) };
}

/**
 * Reads the settings of `service` (or of a client when `service` is undefined).
 * Throws InvalidArgument naming the flag or variable when a value is malformed or a flag is unknown.
 */
export function loadSettings(service: ServiceKey | undefined, options: LoadSettingsOptions = {}): Settings {
  const env = options.env ?? defaultEnv;
  const args = options.args ?? Deno.args;
  const unknown: string[] = [];
  const flags = parseArgs(args, {
    string: [...STRING_FLAGS, ...(options.extraFlags?.string ?? [])],
    boolean: [...(options.extraFlags?.boolean ?? [])],
    unknown: (arg: string, key?: string) => {
      if (key !== undefined && !options.allowUnknown) unknown.push(arg);
      return true;
    },
  });
  if (unknown.length > 0) {
    throw new InvalidArgument(`unknown flag ${unknown[0]}${service ? ` for the ${service} service` : ""}`);
  }
  const str = (
    key: string,
  ) => (typeof flags[key] === "string" && flags[key] !== "" ? flags[key] as string : undefined);

  const flagBase = str("port-base");
  const envBase = env("BERTFORGE_PORT_BASE");
  const portBase = flagBase !== undefined
    ? parsePort(flagBase, "--port-base")
    : envBase
    ? parsePort(envBase, "BERTFORGE_PORT_BASE")
    : DEFAULT_PORT_BASE;
  // A flag beats any variable: `--port-base` given on the command line wins over BERTFORGE_PORT.
  const portFor = (offset: number, flag: string, envName: string): number => {
    const fromFlag = str(flag);
    if (fromFlag !== undefined) return parsePort(fromFlag, `--${flag}`);
    if (flagBase !== undefined) return portBase + offset;
    const fromEnv = env(envName);
    if (fromEnv) return parsePort(fromEnv, envName);
    return portBase + offset;
  };
  const port = service ? portFor(PORT_OFFSETS[service], "port", "BERTFORGE_PORT") : 0;
  const httpPort = portFor(PORT_OFFSETS.inference_http, "http-port", "BERTFORGE_HTTP_PORT");

  const peerHost = "127.0.0.1";
  const peer = (key: ServiceKey): string => {
    const fromFlag = str(`${key}-addr`);
    if (fromFlag) return checkAddress(fromFlag, `--${key}-addr`);
    const fromEnv = flagBase === undefined ? env(PEER_ENV[key]) : undefined;
    if (fromEnv) return checkAddress(fromEnv, PEER_ENV[key]);
    return `${peerHost}:${portBase + PORT_OFFSETS[key]}`;
  };
  const inferenceHttp = str("inference-http") ??
    (flagBase === undefined ? env("BERTFORGE_INFERENCE_HTTP") : undefined) ??
    `http://${peerHost}:${portBase + PORT_OFFSETS.inference_http}`;

  const certFile = str("tls-cert") ?? (env("BERTFORGE_TLS_CERT") || undefined);
  const keyFile = str("tls-key") ?? (env("BERTFORGE_TLS_KEY") || undefined);
  const caFile = str("tls-ca") ?? (env("BERTFORGE_TLS_CA") || undefined);
  if (service && (certFile === undefined) !== (keyFile === undefined)) {
    throw new InvalidArgument(
      "TLS needs both a certificate and a key: set BERTFORGE_TLS_CERT and BERTFORGE_TLS_KEY",
    );
  }
  const tls = certFile || keyFile || caFile
    ? {
      ...(certFile ? { certFile } : {}),
      ...(keyFile ? { keyFile } : {}),
      ...(caFile ? { caFile } : {}),
    }
    : undefined;

  const logLevelRaw = str("log-level") ?? env("BERTFORGE_LOG_LEVEL");
  let logLevel: LogLevel = "info";
  if (logLevelRaw) {
    try {
      logLevel = parseLogLevel(logLevelRaw, str("log-level") ? "--log-level" : "BERTFORGE_LOG_LEVEL");
    } catch (error) {
      throw new InvalidArgument((error as Error).message);
    }
  }
  const threadsRaw = str("threads") ?? env("BERTFORGE_THREADS");
  const graceRaw = str("shutdown-grace-ms") ?? env("BERTFORGE_SHUTDOWN_GRACE_MS");
  const uploadRaw = str("max-upload-bytes") ?? env("BERTFORGE_MAX_UPLOAD_BYTES");

  return {
    host: str("host") ?? (env("BERTFORGE_HOST") || DEFAULT_HOST),
    port,
    httpPort,
    portBase,
    store: resolveStore(flags, env),
    peers: {
      tokenizer: peer("tokenizer"),
      sharding: peer("sharding"),
      trainer: peer("trainer"),
      inference: peer("inference"),
      inferenceHttp,
    },
    authToken: readAuthToken(
      str("auth-token") ?? (env("BERTFORGE_AUTH_TOKEN") || undefined),
      str("auth-token-file") ?? (env("BERTFORGE_AUTH_TOKEN_FILE") || undefined),
    ),
    tls,
    logLevel,
    backend: str("backend") ?? (env("BERTFORGE_BACKEND") || "auto"),
    threads: threadsRaw
      ? parsePositiveInt(threadsRaw, str("threads") ? "--threads" : "BERTFORGE_THREADS")
      : undefined,
    shutdownGraceMs: graceRaw
      ? parsePositiveInt(
        graceRaw,
        str("shutdown-grace-ms") ? "--shutdown-grace-ms" : "BERTFORGE_SHUTDOWN_GRACE_MS",
      )
      : 10_000,
    ...(uploadRaw
      ? {
        maxUploadBytes: parsePositiveInt(
          uploadRaw,
          str("max-upload-bytes") ? "--max-upload-bytes" : "BERTFORGE_MAX_UPLOAD_BYTES",
        ),
      }
      : {}),
    flags,
    args: flags._.map(String),
  };
}

/** The environment variables that make a child process see the same store (fleet → services). */
export function storeEnv(store: StoreSettings): Record<string, string> {
  if ("s3" in store) {
    return {
      BERTFORGE_S3_URL: store.s3.url,
      BERTFORGE_S3_BUCKET: store.s3.bucket,
      BERTFORGE_S3_ACCESS_KEY: store.s3.accessKey,
      BERTFORGE_S3_SECRET_KEY: store.s3.secretKey,
      BERTFORGE_S3_REGION: store.s3.region,
    };
  }
  return { BERTFORGE_STORE_DIR: store.dir };
}

/**
 * The bearer token, given directly or as a file (first line, trimmed). A file keeps the token out of the
 * process list, where `--auth-token T` shows it to every user of the machine; giving both is ambiguous.
 */
function readAuthToken(token: string | undefined, file: string | undefined): string | undefined {
  if (file === undefined) return token;
  if (token !== undefined) {
    throw new InvalidArgument(
      "give the auth token once: --auth-token (BERTFORGE_AUTH_TOKEN) or --auth-token-file",
    );
  }
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (error) {
    throw new InvalidArgument(`--auth-token-file ${file} cannot be read: ${(error as Error).message}`);
  }
  const read = text.split("\n")[0]!.trim();
  if (read === "") throw new InvalidArgument(`--auth-token-file ${file} is empty: it must hold the token`);
  return read;
}

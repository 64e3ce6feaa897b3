/**
 * Test support: a real S3 server (s3rver, Koa on node:http) in a child process on a loopback port,
 * its data in a temp folder. A child process keeps the server's memory and sockets out of the test
 * process. Used by the store and jobs tests; e2e tests can use it to run the fleet against S3.
 *
 * Known s3rver 3.7.1 deviations from S3/MinIO (see s3_test.ts): non-recursive listings drop common
 * prefixes whose keys are two levels deeper, and concurrent writes to one key are not atomic.
 *
 * @module
 */
import { S3Store } from "./s3.ts";

export interface S3rverHandle {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Credentials s3rver accepts. */
  accessKey: string;
  secretKey: string;
  /** An S3Store on this server (bucket created on first use). */
  store(bucket?: string, partSize?: number): S3Store;
  stop(): Promise<void>;
}

/** Starts s3rver on `port` (0: any free port) and resolves once it listens. */
export async function startS3rver(port = 0): Promise<S3rverHandle> {
  const directory = await Deno.makeTempDir({ prefix: "bertforge-s3rver-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_s3rver_child.ts", import.meta.url).pathname, directory, String(port)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) {
      await Deno.remove(directory, { recursive: true }).catch(() => {});
      throw new Error(`s3rver child exited (${(await child.status).code}) before listening on port ${port}`);
    }
    text += value;
  }
  const { port: bound } = JSON.parse(text.split("\n")[0]) as { port: number };
  const url = `http://127.0.0.1:${bound}`;
  return {
    url,
    port: bound,
    accessKey: "S3RVER",
    secretKey: "S3RVER",
    store: (bucket = "bertforge", partSize?: number) =>
      new S3Store({
        url,
        bucket,
        accessKey: "S3RVER",
        secretKey: "S3RVER",
        ...(partSize ? { partSize } : {}),
      }),
    stop: async () => {
      child.kill("SIGTERM");
      await lines.cancel().catch(() => {});
      await child.status;
      await Deno.remove(directory, { recursive: true });
    },
  };
}

/**
 * Runs s3rver (a real S3 server) in its own process for tests, so the test process's memory is the
 * client's alone. Usage: `deno run -A _s3rver_child.ts DIR [PORT]`; prints `{"port":N}` once listening
 * and serves until killed.
 */
import S3rver from "s3rver";

const [directory, port = "0"] = Deno.args;
if (!directory) throw new Error("usage: _s3rver_child.ts DIR [PORT]");
const server = new S3rver({ port: Number(port), address: "127.0.0.1", silent: true, directory });
const address = await server.run();
console.log(JSON.stringify({ port: address.port }));
Deno.addSignalListener("SIGTERM", () => server.close().then(() => Deno.exit(0)));

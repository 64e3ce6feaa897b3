/**
 * What each image would run, run here: the CMD and ENV of every target of deploy/docker/Dockerfile (read from
 * the file), from the repository root as the image's WORKDIR holds it. The service must come up and answer
 * grpc.health.v1 — what the images' HEALTHCHECK and the chart's probes ask — and stop cleanly on SIGTERM, as
 * `docker stop` and Kubernetes send it. Ports are free ones instead of the image's, so a fleet already running
 * on this machine does not collide; the image's own ports are checked in dockerfile_test.ts.
 */
import { assert, assertEquals } from "@std/assert";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ROOT } from "./_helm.ts";
import { effective, envOf, parseStages } from "./_dockerfile.ts";

const stages = parseStages(Deno.readTextFileSync(`${ROOT}deploy/docker/Dockerfile`));
const health = protoLoader.loadSync(`${ROOT}protos/grpc/health/v1/health.proto`, {
  keepCase: true,
  enums: String,
});
// deno-lint-ignore no-explicit-any
const Health = (grpc.loadPackageDefinition(health) as any).grpc.health.v1.Health;

// The build stage's `deno install --frozen --entrypoint ...`, so --cached-only finds what the image would hold.
const install = new Deno.Command(Deno.execPath(), {
  args: [
    "install",
    "--frozen",
    "--entrypoint",
    ...["tokenizer", "sharding", "trainer", "inference"].map((s) => `services/${s}/main.ts`),
  ],
  cwd: ROOT,
  stdout: "null",
  stderr: "piped",
}).outputSync();
if (!install.success) throw new Error(`deno install failed: ${new TextDecoder().decode(install.stderr)}`);

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Polls Check("") until the server answers; resolves to the status, rejects after `ms`. */
async function healthStatus(addr: string, ms: number, exited: () => boolean): Promise<string> {
  const client = new Health(addr, grpc.credentials.createInsecure());
  const deadline = Date.now() + ms;
  try {
    while (Date.now() < deadline && !exited()) {
      const status = await new Promise<string | null>((resolve) => {
        client.Check(
          { service: "" },
          { deadline: Date.now() + 2000 },
          (err: unknown, res: { status: string }) => {
            resolve(err ? null : res.status);
          },
        );
      });
      if (status) return status;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(exited() ? "the service exited before answering" : `no health answer within ${ms} ms`);
  } finally {
    client.close();
  }
}

for (const target of ["tokenizer", "sharding", "trainer", "inference"]) {
  Deno.test({
    name:
      `Dockerfile target ${target}: its CMD and ENV start the service, which answers health and stops on SIGTERM`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const cmd = JSON.parse(effective(stages, target, "CMD")!.args) as string[];
      assertEquals(cmd[0], "deno");
      const env = Object.fromEntries(envOf(stages, target));
      // Image paths that do not exist here; the Deno cache and kernels are this checkout's.
      delete env.DENO_DIR;
      if (env.BERTFORGE_KERNELS) env.BERTFORGE_KERNELS = `${ROOT}build/libbertforge_kernels.so`;
      const port = freePort();
      Object.assign(env, { BERTFORGE_HOST: "127.0.0.1", BERTFORGE_PORT: String(port) });
      if (env.BERTFORGE_HTTP_PORT) env.BERTFORGE_HTTP_PORT = String(freePort());
      const store = await Deno.makeTempDir();
      env.BERTFORGE_STORE_DIR = store;
      env.BERTFORGE_TOKENIZER_ADDR = `127.0.0.1:${freePort()}`;

      const child = new Deno.Command(Deno.execPath(), {
        args: cmd.slice(1),
        cwd: ROOT,
        env,
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let exited = false;
      const done = child.output().finally(() => exited = true);
      try {
        const status = await healthStatus(`127.0.0.1:${port}`, 90_000, () => exited);
        // Inference stays NOT_SERVING until its default models load (an empty store here has none).
        assert(["SERVING", "NOT_SERVING"].includes(status), status);
        if (target !== "inference") assertEquals(status, "SERVING");
      } finally {
        if (!exited) child.kill("SIGTERM");
        const out = await done;
        await Deno.remove(store, { recursive: true });
        const log = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
        assertEquals(
          out.code,
          0,
          `${target} did not stop cleanly (exit code ${out.code}):\n${log.slice(-2000)}`,
        );
      }
    },
  });
}

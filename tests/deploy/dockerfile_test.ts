/**
 * deploy/docker/Dockerfile and Dockerfile.gpu checked without a Docker engine: dockerfile-utils' linter (the
 * one behind the VS Code Docker extension) for syntax and flags, then what hadolint would ask of an image and
 * what bertforge asks: pinned bases, a non-root USER, a HEALTHCHECK and the right entry point per target,
 * COPY sources that exist, no credentials baked in.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { existsSync } from "@std/fs";
import { validate } from "dockerfile-utils";
import { ROOT } from "./_helm.ts";
import { effective, envOf, parseStages } from "./_dockerfile.ts";

const FILES = {
  "deploy/docker/Dockerfile": ["tokenizer", "sharding", "trainer", "inference"],
  "deploy/docker/Dockerfile.gpu": ["trainer-gpu"],
};
const PORTS: Record<string, string> = {
  tokenizer: "50051",
  sharding: "50052",
  trainer: "50053",
  "trainer-gpu": "50053",
  inference: "50054",
};

for (const [file, targets] of Object.entries(FILES)) {
  const text = Deno.readTextFileSync(`${ROOT}${file}`);
  const stages = parseStages(text);

  Deno.test(`${file}: dockerfile-utils finds no problem`, () => {
    const problems = validate(text).map((d) => `${d.range.start.line + 1}: ${d.message}`);
    assertEquals(problems, []);
  });

  Deno.test(`${file}: every base image is pinned to a version, none is :latest`, () => {
    const names = new Set(stages.map((s) => s.name));
    for (const s of stages) {
      if (names.has(s.from)) continue;
      assertMatch(s.from, /^[\w./-]+(:[\w.-]*\d[\w.-]*|@sha256:[0-9a-f]{64})$/, `${s.name}: FROM ${s.from}`);
      assert(!s.from.endsWith(":latest"), s.from);
    }
  });

  Deno.test(`${file}: each target runs as a non-root user, checks its health and starts its service`, () => {
    for (const t of targets) {
      const user = effective(stages, t, "USER");
      assert(user, `${t}: no USER`);
      assertMatch(user.args, /^(?!0(:|$))(?!root(:|$))\S+$/, `${t}: USER ${user.args}`);
      assertMatch(effective(stages, t, "HEALTHCHECK")?.args ?? "", /CMD \["bertforge-healthcheck"\]/, t);
      const service = t.replace(/-gpu$/, "");
      const cmd = JSON.parse(effective(stages, t, "CMD")!.args) as string[];
      assertEquals(cmd.slice(0, 2), ["deno", "run"]);
      assertEquals(cmd.at(-1), `services/${service}/main.ts`);
      const env = envOf(stages, t);
      assertEquals(env.get("BERTFORGE_PORT"), PORTS[t], `${t}: BERTFORGE_PORT`);
      assertEquals(env.get("BERTFORGE_HOST"), "0.0.0.0");
      const exposed = effective(stages, t, "EXPOSE")!.args.split(/\s+/);
      assert(exposed.includes(PORTS[t]!), `${t}: EXPOSE ${exposed}`);
      if (service === "inference") assert(exposed.includes(env.get("BERTFORGE_HTTP_PORT")!));
    }
    const gpuEnv = envOf(stages, targets[0]!);
    if (file.endsWith(".gpu")) assertEquals(gpuEnv.get("BERTFORGE_BACKEND"), "tensorflow");
  });

  Deno.test(`${file}: no credentials in the image, and COPY sources from the context exist`, () => {
    for (const s of stages) {
      for (const i of s.instructions) {
        if (i.keyword === "ENV" || i.keyword === "ARG") {
          assert(!/(_KEY|PASSWORD|_TOKEN|SECRET)\w*=/.test(i.args), `${file}:${i.line}: ${i.args}`);
        }
        if (i.keyword === "ADD") {
          assertMatch(i.args, /--checksum=/, `${file}:${i.line}: ADD needs --checksum`);
        }
        if (i.keyword === "COPY" && !/--from=/.test(i.args)) {
          const paths = i.args.replace(/--\S+\s+/g, "").split(/\s+/).slice(0, -1);
          for (const p of paths) {
            assert(existsSync(`${ROOT}${p}`), `${file}: COPY ${p}: not in the repository`);
          }
        }
      }
    }
  });
}

Deno.test("the healthcheck script probes BERTFORGE_PORT and switches to TLS with BERTFORGE_TLS_CERT", async () => {
  const script = `${ROOT}deploy/docker/healthcheck.sh`;
  assert((Deno.statSync(script).mode! & 0o111) !== 0, "healthcheck.sh must be executable");
  // A stand-in grpc_health_probe on PATH records the arguments the script passes.
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/grpc_health_probe`, `#!/bin/sh\necho "$@"\n`, { mode: 0o755 });
  const run = async (env: Record<string, string>) => {
    const out = await new Deno.Command("sh", {
      args: [script],
      env: { PATH: `${dir}:/usr/bin:/bin`, ...env },
      clearEnv: true,
      stdout: "piped",
    }).output();
    assert(out.success);
    return new TextDecoder().decode(out.stdout).trim().split(" ");
  };
  const plain = await run({ BERTFORGE_PORT: "50054" });
  assertEquals(plain[0], "-addr=127.0.0.1:50054");
  assert(!plain.includes("-tls"));
  const tls = await run({ BERTFORGE_PORT: "50051", BERTFORGE_TLS_CERT: "/etc/bertforge/tls/tls.crt" });
  assertEquals(tls.slice(0, 3), ["-addr=127.0.0.1:50051", "-tls", "-tls-no-verify"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the build context ignore files keep node_modules, .tools and .git out", () => {
  for (const f of ["Dockerfile.dockerignore", "Dockerfile.gpu.dockerignore"]) {
    const lines = Deno.readTextFileSync(`${ROOT}deploy/docker/${f}`).split("\n");
    assertEquals(
      lines.find((l) => !l.startsWith("#") && l.trim()),
      "**",
      `${f}: start by excluding everything`,
    );
    assert(lines.includes("**/node_modules"));
  }
});

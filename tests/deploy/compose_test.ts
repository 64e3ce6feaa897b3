/**
 * deploy/compose.yaml and deploy/otel/collector.yaml checked without a Docker engine: the structure and wiring
 * here, and `docker-compose config` (Debian's docker-compose, installed by `make deploy-tools`) when present.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { parse } from "@std/yaml";
import { ROOT } from "./_helm.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** Applies YAML merge keys (`<<: *anchor`), which compose honours and @std/yaml leaves as a plain "<<" key. */
function merged(v: Any): Any {
  if (Array.isArray(v)) return v.map(merged);
  if (v === null || typeof v !== "object") return v;
  const out: Any = {};
  const bases = v["<<"] === undefined ? [] : [v["<<"]].flat();
  for (const b of bases) Object.assign(out, merged(b));
  for (const [k, x] of Object.entries(v)) if (k !== "<<") out[k] = merged(x);
  return out;
}

const compose = merged(parse(await Deno.readTextFile(`${ROOT}deploy/compose.yaml`)));
const gpu = parse(await Deno.readTextFile(`${ROOT}deploy/compose.gpu.yaml`)) as Any;
const collector = parse(await Deno.readTextFile(`${ROOT}deploy/otel/collector.yaml`)) as Any;
const envExample = await Deno.readTextFile(`${ROOT}deploy/.env.example`);
const dockerfile = await Deno.readTextFile(`${ROOT}deploy/docker/Dockerfile`);

// Ports of docs/conventions.md from the default base 50050.
const PORTS: Record<string, number> = { tokenizer: 50051, sharding: 50052, trainer: 50053, inference: 50054 };
const BERTFORGE = Object.keys(PORTS);

/** The container port a `host:port:container` or `port:container` mapping publishes, keyed by host port. */
function published(ports: string[]): Map<number, number> {
  return new Map(ports.map((p) => {
    const parts = p.split(":");
    return [Number(parts.at(-2)), Number(parts.at(-1))];
  }));
}

Deno.test("compose runs the four services, MinIO with its bucket job, the collector and Jaeger", () => {
  assertEquals(
    Object.keys(compose.services).sort(),
    ["create-bucket", "inference", "jaeger", "minio", "otel-collector", "sharding", "tokenizer", "trainer"],
  );
  assertMatch(compose.services["create-bucket"].command.join("\n"), /mc mb --ignore-existing/);
  assertEquals(compose.services["create-bucket"].depends_on.minio.condition, "service_healthy");
  assert(compose.services.minio.healthcheck.test.length > 1);
});

Deno.test("each bertforge service builds its own Dockerfile target and listens on its conventions port", () => {
  for (const name of BERTFORGE) {
    const s = compose.services[name];
    assertEquals(s.build.target, name);
    assertEquals(s.build.dockerfile, "deploy/docker/Dockerfile");
    assertMatch(dockerfile, new RegExp(`^FROM \\S+ AS ${name}$`, "m"));
    assertEquals(s.environment.BERTFORGE_PORT, String(PORTS[name]));
    assertEquals(s.environment.BERTFORGE_HOST, "0.0.0.0");
    assertEquals(published(s.ports).get(PORTS[name]!), PORTS[name], `${name} publishes its gRPC port`);
    assertEquals(s.healthcheck.test, ["CMD", "bertforge-healthcheck"]);
    assertEquals(s.depends_on["create-bucket"].condition, "service_completed_successfully");
  }
  const inf = compose.services.inference;
  assertEquals(inf.environment.BERTFORGE_HTTP_PORT, "50055");
  assertEquals(published(inf.ports).get(50055), 50055);
});

Deno.test("services reach MinIO, the collector and each other by compose service name and listening port", () => {
  const collectorHttp = collector.receivers.otlp.protocols.http.endpoint as string;
  for (const name of BERTFORGE) {
    const env = compose.services[name].environment;
    const s3 = new URL(env.BERTFORGE_S3_URL);
    assert(compose.services[s3.hostname], `${name}: ${s3.hostname} is no service`);
    assertEquals(s3.port, "9000");
    const otlp = new URL(env.OTEL_EXPORTER_OTLP_ENDPOINT);
    assertEquals(otlp.hostname, "otel-collector");
    assertEquals(otlp.port, collectorHttp.split(":")[1], "OTLP/HTTP port of the collector");
    assert(compose.services[name].depends_on["otel-collector"]);
  }
  const sharding = compose.services.sharding;
  assertEquals(sharding.environment.BERTFORGE_TOKENIZER_ADDR, `tokenizer:${PORTS.tokenizer}`);
  assertEquals(sharding.depends_on.tokenizer.condition, "service_healthy");
});

Deno.test("credentials come from the env file: no literal secrets, every required variable in .env.example", () => {
  const text = Deno.readTextFileSync(`${ROOT}deploy/compose.yaml`);
  for (const s of Object.values(compose.services) as Any[]) {
    for (const [k, v] of Object.entries(s.environment ?? {})) {
      if (/_(KEY|PASSWORD|TOKEN|SECRET)(_|$)/.test(k)) {
        assertMatch(String(v), /^\$\{[A-Z_]+(:[-?][^}]*)?\}$/, `${k} must be interpolated`);
      }
    }
  }
  const defined = new Set([...envExample.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]));
  for (const m of text.matchAll(/\$\{([A-Z_]+):\?/g)) {
    assert(defined.has(m[1]), `${m[1]} missing in .env.example`);
  }
  for (const m of text.matchAll(/\$\{([A-Z_]+)(:-[^}]*)?\}/g)) {
    assert(defined.has(m[1]), `${m[1]} not in .env.example`);
  }
});

Deno.test("depends_on names existing services and has no cycle; third-party images are pinned", () => {
  const deps = (n: string): string[] => {
    const d = compose.services[n].depends_on ?? [];
    return Array.isArray(d) ? d : Object.keys(d);
  };
  const visiting = new Set<string>();
  const visit = (n: string, path: string[]) => {
    assert(compose.services[n], `${path.join(" -> ")} -> ${n}: no such service`);
    assert(!visiting.has(n), `cycle: ${[...path, n].join(" -> ")}`);
    visiting.add(n);
    for (const d of deps(n)) visit(d, [...path, n]);
    visiting.delete(n);
  };
  for (const n of Object.keys(compose.services)) visit(n, []);
  for (const [n, s] of Object.entries(compose.services) as [string, Any][]) {
    if (s.build) continue;
    assertMatch(s.image, /:[^:]*\d[^:]*$/, `${n}: pin a versioned tag`);
    assert(!s.image.endsWith(":latest"), n);
  }
  for (const v of compose.services["otel-collector"].volumes as string[]) {
    const src = v.split(":")[0]!;
    Deno.statSync(`${ROOT}deploy/${src}`);
  }
});

Deno.test("the collector pipeline uses only defined components and exports to the Jaeger service", () => {
  for (const [name, p] of Object.entries(collector.service.pipelines) as [string, Any][]) {
    for (const r of p.receivers) assert(collector.receivers[r], `${name}: receiver ${r}`);
    for (const r of p.processors ?? []) assert(collector.processors[r], `${name}: processor ${r}`);
    for (const e of p.exporters) assert(collector.exporters[e], `${name}: exporter ${e}`);
  }
  assertEquals(collector.exporters["otlp/jaeger"].endpoint, "jaeger:4317");
  assertEquals(compose.services.jaeger.environment.COLLECTOR_OTLP_ENABLED, "true");
});

Deno.test("the GPU override switches the trainer to the CUDA image and reserves NVIDIA GPUs", () => {
  const t = gpu.services.trainer;
  assertEquals(t.build.dockerfile, "deploy/docker/Dockerfile.gpu");
  assertMatch(
    Deno.readTextFileSync(`${ROOT}deploy/docker/Dockerfile.gpu`),
    new RegExp(` AS ${t.build.target}$`, "m"),
  );
  assertEquals(t.environment.BERTFORGE_BACKEND, "tensorflow");
  const dev = t.deploy.resources.reservations.devices[0];
  assertEquals([dev.driver, dev.capabilities], ["nvidia", ["gpu"]]);
});

const dockerCompose = (() => {
  try {
    return new Deno.Command("docker-compose", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync()
      .success;
  } catch {
    return false;
  }
})();
if (!dockerCompose) {
  console.warn("compose_test: docker-compose not found; run `make deploy-tools` for the config check");
}

Deno.test({
  name: "docker-compose config accepts compose.yaml, alone and with the GPU override",
  ignore: !dockerCompose,
  async fn() {
    for (const files of [["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]]) {
      const args = [
        ...files.flatMap((f) => ["-f", `${ROOT}deploy/${f}`]),
        "--env-file",
        `${ROOT}deploy/.env.example`,
      ];
      const out = await new Deno.Command("docker-compose", {
        args: [...args, "config", "-q"],
        stderr: "piped",
      })
        .output();
      assert(out.success, `${files}: ${new TextDecoder().decode(out.stderr)}`);
    }
    // A missing credential stops compose with the message from compose.yaml.
    const empty = await Deno.makeTempFile();
    const out = await new Deno.Command("docker-compose", {
      args: ["-f", `${ROOT}deploy/compose.yaml`, "--env-file", empty, "config", "-q"],
      stderr: "piped",
      env: { MINIO_ROOT_USER: "", MINIO_ROOT_PASSWORD: "" },
    }).output();
    await Deno.remove(empty);
    assert(!out.success);
    assertMatch(new TextDecoder().decode(out.stderr), /set MINIO_ROOT_USER in deploy\/\.env/);
  },
});

/**
 * charts/bertforge rendered by the real helm (from `make deploy-tools`) with the default values and the
 * example values in charts/bertforge/ci/, every manifest checked against the Kubernetes 1.27 schemas, then the
 * behaviour operators rely on: GPU scheduling, the CPU-only trainer, external MinIO, auth, TLS, probes, HPA.
 * Without helm these tests are skipped with a message (`make deploy-test` installs it).
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { CHART, envOf, find, findHelm, helm, type Manifest, render, validateManifest } from "./_helm.ts";
import { unknownFields } from "./_strict.ts";

const HELM = findHelm();
if (!HELM) {
  console.warn(
    "chart_test: helm not found; run `make deploy-tools` (or make deploy-test) to run these tests",
  );
}
const ignore = !HELM;
const VALUES_FILES = ["ci/gpu-values.yaml", "ci/cpu-values.yaml", "ci/external-minio-values.yaml"];
const N = "rel-bertforge";

const deployments = (ms: Manifest[]) => ms.filter((m) => m.kind === "Deployment");
const podSpec = (d: Manifest) => d.spec.template.spec;
const container = (d: Manifest) => podSpec(d).containers[0];

Deno.test({
  name: "chart renders with each values file and every manifest passes the Kubernetes schemas, strictly",
  ignore,
  async fn() {
    for (const files of [[], ...VALUES_FILES.map((f) => [f])]) {
      const ms = await render(HELM!, files);
      assert(ms.length >= 10, `${files}: only ${ms.length} manifests`);
      for (const m of ms) {
        validateManifest(m);
        assertEquals(
          unknownFields(m),
          [],
          `${files}: ${m.kind} ${m.metadata.name} has fields its kind lacks`,
        );
      }
      const lint = await helm(HELM!, [
        "lint",
        "--strict",
        CHART,
        ...files.flatMap((f) => ["-f", `${CHART}/${f}`]),
      ]);
      assert(lint.ok, `helm lint ${files}: ${lint.stdout}${lint.stderr}`);
    }
  },
});

Deno.test({
  name: "default values: trainer on a GPU (limit, CUDA image, tensorflow backend, GPU taint tolerated)",
  ignore,
  async fn() {
    const ms = await render(HELM!);
    const t = find(ms, "Deployment", `${N}-trainer`);
    assertEquals(container(t).resources.limits["nvidia.com/gpu"], 1);
    assertMatch(container(t).image, /\/trainer:0\.1\.0-gpu$/);
    assertEquals(envOf(t).get("BERTFORGE_BACKEND"), "tensorflow");
    assertEquals(t.spec.strategy.type, "Recreate");
    assert(podSpec(t).tolerations.some((x: { key: string }) => x.key === "nvidia.com/gpu"));
    assertEquals(podSpec(t).runtimeClassName, undefined);
  },
});

Deno.test({
  name: "GPU values: count, runtimeClassName, nodeSelector, affinity and the override tolerations policy",
  ignore,
  async fn() {
    const ms = await render(HELM!, ["ci/gpu-values.yaml"]);
    const t = find(ms, "Deployment", `${N}-trainer`);
    assertEquals(container(t).resources.limits["nvidia.com/gpu"], 2);
    assertEquals(podSpec(t).runtimeClassName, "nvidia");
    assertEquals(podSpec(t).nodeSelector["nvidia.com/gpu.product"], "NVIDIA-A100-SXM4-80GB");
    assert(podSpec(t).affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution);
    // override: the trainer drops the chart-wide `spot` toleration; append: inference keeps it.
    assertEquals(podSpec(t).tolerations.map((x: { key: string }) => x.key), ["dedicated", "nvidia.com/gpu"]);
    const inf = find(ms, "Deployment", `${N}-inference`);
    assertEquals(podSpec(inf).tolerations.map((x: { key: string }) => x.key), ["spot"]);
    // GPU limits only on the trainer.
    for (const d of deployments(ms).filter((d) => d !== t)) {
      assertEquals(container(d).resources.limits?.["nvidia.com/gpu"], undefined, d.metadata.name);
    }
  },
});

Deno.test({
  name: "CPU-only values: CPU image, native backend, no GPU limit or runtime class, fixed inference replicas",
  ignore,
  async fn() {
    const ms = await render(HELM!, ["ci/cpu-values.yaml"]);
    const t = find(ms, "Deployment", `${N}-trainer`);
    assertMatch(container(t).image, /\/trainer:0\.1\.0$/);
    assertEquals(envOf(t).get("BERTFORGE_BACKEND"), "native");
    assertEquals(envOf(t).get("BERTFORGE_THREADS"), "8");
    assertEquals(container(t).resources.limits["nvidia.com/gpu"], undefined);
    assertEquals(podSpec(t).runtimeClassName, undefined);
    assertEquals(podSpec(t).tolerations, undefined);
    assertEquals(
      ms.filter((m) => m.kind === "HorizontalPodAutoscaler" || m.kind === "PodDisruptionBudget"),
      [],
    );
    assertEquals(find(ms, "Deployment", `${N}-inference`).spec.replicas, 3);
    const minio = find(ms, "StatefulSet", `${N}-minio`);
    assertEquals(minio.spec.volumeClaimTemplates, undefined);
    assert(podSpec(minio).volumes.some((v: { emptyDir?: unknown }) => v.emptyDir));
  },
});

Deno.test({
  name:
    "external MinIO: no bundled store, credentials from the existing Secret, endpoint and bucket passed on",
  ignore,
  async fn() {
    const ms = await render(HELM!, ["ci/external-minio-values.yaml"]);
    assertEquals(ms.filter((m) => m.metadata.name.includes("minio")), []);
    for (const d of deployments(ms)) {
      const env = envOf(d);
      assertEquals(env.get("BERTFORGE_S3_URL"), "https://s3.eu-west-1.amazonaws.com");
      assertEquals(env.get("BERTFORGE_S3_BUCKET"), "team-bert");
      assertEquals(env.get("BERTFORGE_S3_REGION"), "eu-west-1");
      assertEquals(env.get("BERTFORGE_S3_ACCESS_KEY"), "secret:bertforge-s3/access-key");
      assertEquals(env.get("BERTFORGE_S3_SECRET_KEY"), "secret:bertforge-s3/secret-key");
      assertMatch(container(d).image, /^registry\.example\.com\/bertforge\/\w+:1\.2\.3/);
      assertEquals(podSpec(d).imagePullSecrets, [{ name: "regcred" }]);
    }
  },
});

Deno.test({
  name: "bundled MinIO: services use its Service and Secret, a hook Job creates the bucket",
  ignore,
  async fn() {
    const ms = await render(HELM!);
    const svc = find(ms, "Service", `${N}-minio`);
    find(ms, "StatefulSet", `${N}-minio`);
    const secret = find(ms, "Secret", `${N}-minio`);
    assertEquals(atob(secret.data["root-user"]), "bertforge");
    assertEquals(atob(secret.data["root-password"]).length, 32);
    const job = find(ms, "Job", `${N}-minio-bucket`);
    assertStringIncludes(job.metadata.annotations!["helm.sh/hook"], "post-install");
    assertStringIncludes(container(job).command.join(" "), "mc mb --ignore-existing");
    for (const d of deployments(ms)) {
      const env = envOf(d);
      assertEquals(env.get("BERTFORGE_S3_URL"), `http://${svc.metadata.name}:${svc.spec.ports[0].port}`);
      assertEquals(env.get("BERTFORGE_S3_SECRET_KEY"), `secret:${N}-minio/root-password`);
    }
  },
});

Deno.test({
  name: "auth: a generated token Secret, or the existing one with its key, reaches every service",
  ignore,
  async fn() {
    let ms = await render(HELM!, ["ci/cpu-values.yaml"]);
    const secret = find(ms, "Secret", `${N}-auth`);
    const token = atob(secret.data.token);
    assertEquals(token.length, 32);
    // The pods roll when the token changes: their annotation hashes the very token the Secret holds.
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)));
    const hash = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 16);
    for (const d of deployments(ms)) {
      assertEquals(envOf(d).get("BERTFORGE_AUTH_TOKEN"), `secret:${N}-auth/token`);
      assertEquals(d.spec.template.metadata.annotations["checksum/auth"], hash, d.metadata.name);
    }

    ms = await render(HELM!, ["ci/gpu-values.yaml"]);
    assertEquals(ms.filter((m) => m.kind === "Secret" && m.metadata.name.endsWith("-auth")), []);
    for (const d of deployments(ms)) {
      assertEquals(envOf(d).get("BERTFORGE_AUTH_TOKEN"), "secret:bertforge-token/bearer");
    }

    ms = await render(HELM!);
    for (const d of deployments(ms)) assert(!envOf(d).has("BERTFORGE_AUTH_TOKEN"), d.metadata.name);
  },
});

Deno.test({
  name: "probes: liveness asks the server, readiness the service; grpc_health_probe over TLS when TLS is on",
  ignore,
  async fn() {
    const serviceOf = (d: Manifest) => {
      const component = d.metadata.name.split("-").at(-1)!; // <fullname>-<component>
      return `bertforge.v1.${component[0]!.toUpperCase()}${component.slice(1)}Service`;
    };
    for (const d of deployments(await render(HELM!))) {
      const port = container(d).ports.find((p: { name: string }) => p.name === "grpc").containerPort;
      for (const p of ["livenessProbe", "startupProbe"]) {
        assertEquals(container(d)[p].grpc, { port }, `${d.metadata.name} ${p}`);
      }
      assertEquals(
        container(d).readinessProbe.grpc,
        { port, service: serviceOf(d) },
        `${d.metadata.name} readiness`,
      );
    }
    for (const d of deployments(await render(HELM!, ["ci/gpu-values.yaml"]))) {
      const c = container(d);
      const port = c.ports[0].containerPort;
      assertEquals(c.readinessProbe.grpc, undefined);
      assertEquals(c.readinessProbe.exec.command.slice(0, 4), [
        "grpc_health_probe",
        `-addr=127.0.0.1:${port}`,
        "-tls",
        "-tls-no-verify",
      ]);
      assertEquals(c.readinessProbe.exec.command.at(-1), `-service=${serviceOf(d)}`);
      assertEquals(c.livenessProbe.exec.command.some((a: string) => a.startsWith("-service")), false);
      assertEquals(envOf(d).get("BERTFORGE_TLS_CERT"), "/etc/bertforge/tls/tls.crt");
      assertEquals(envOf(d).get("BERTFORGE_TLS_KEY"), "/etc/bertforge/tls/tls.key");
      const vol = podSpec(d).volumes.find((v: { name: string }) => v.name === "tls");
      assertEquals(vol.secret.secretName, "bertforge-tls");
      assertEquals(envOf(d).get("OTEL_EXPORTER_OTLP_ENDPOINT"), "http://otel-collector.observability:4318");
    }
  },
});

Deno.test({
  name: "Services, HPA and PDB select the pods they are meant for, on ports the containers open",
  ignore,
  async fn() {
    const ms = await render(HELM!);
    const ports: Record<string, number[]> = {
      tokenizer: [50051],
      sharding: [50052],
      trainer: [50053],
      inference: [50054, 50055],
    };
    for (const [name, expected] of Object.entries(ports)) {
      const d = find(ms, "Deployment", `${N}-${name}`);
      const svc = find(ms, "Service", `${N}-${name}`);
      const labels = d.spec.template.metadata.labels;
      for (const [k, v] of Object.entries(svc.spec.selector)) {
        assertEquals(labels[k], v, `${name} selector ${k}`);
      }
      assertEquals(svc.spec.ports.map((p: { port: number }) => p.port), expected);
      const named = new Set(container(d).ports.map((p: { name: string }) => p.name));
      for (const p of svc.spec.ports) assert(named.has(p.targetPort), `${name}: targetPort ${p.targetPort}`);
      assertEquals(envOf(d).get("BERTFORGE_PORT"), String(expected[0]));
      assertEquals(envOf(d).get("BERTFORGE_HOST"), "0.0.0.0");
      assertEquals(podSpec(d).securityContext.runAsNonRoot, true);
    }
    const inf = find(ms, "Deployment", `${N}-inference`);
    assertEquals(envOf(inf).get("BERTFORGE_HTTP_PORT"), "50055");
    assertEquals(inf.spec.replicas, undefined, "the HPA owns the replica count");
    const hpa = find(ms, "HorizontalPodAutoscaler", `${N}-inference`);
    assertEquals(hpa.spec.scaleTargetRef, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      name: inf.metadata.name,
    });
    assertEquals([hpa.spec.minReplicas, hpa.spec.maxReplicas], [2, 8]);
    const pdb = find(ms, "PodDisruptionBudget", `${N}-inference`);
    assertEquals(pdb.spec.selector.matchLabels, inf.spec.selector.matchLabels);
    // The sharder dials the tokenizer Service by name.
    const sharding = find(ms, "Deployment", `${N}-sharding`);
    assertEquals(envOf(sharding).get("BERTFORGE_TOKENIZER_ADDR"), `${N}-tokenizer:50051`);
  },
});

Deno.test({
  name: "values.schema.json makes helm refuse bad values with a message naming the field",
  ignore,
  async fn() {
    const cases: [string[], RegExp][] = [
      [["minio.enabled=false"], /store\/external\/endpoint/],
      [["trainer.gpus=1"], /additional properties 'gpus'/],
      [["inference.backend=cuda"], /inference\/backend/],
      [["tls.enabled=true"], /tls\/existingSecret/],
      [["tokenizer.port=70000"], /tokenizer\/port/],
    ];
    for (const [sets, msg] of cases) {
      const r = await helm(HELM!, ["template", "rel", CHART, ...sets.flatMap((s) => ["--set", s])]);
      assert(!r.ok, `${sets} rendered`);
      assertMatch(r.stderr, msg);
    }
  },
});

Deno.test({
  name: "resource names stay within 63 characters for the longest release name helm accepts (53)",
  ignore,
  async fn() {
    const release = "a-very-long-release-name-for-a-team-that-likes-names".padEnd(53, "x");
    const r = await helm(HELM!, ["template", release, CHART]);
    assert(r.ok, r.stderr);
    for (const m of r.stdout.matchAll(/^ {2}name: (\S+)$/gm)) assert(m[1]!.length <= 63, m[1]);
  },
});

Deno.test({
  name:
    "NOTES.txt (via a client-side dry-run install) gives addresses, port-forwards and how to read the token",
  ignore,
  async fn() {
    const r = await helm(HELM!, [
      "install",
      "bf",
      CHART,
      "-n",
      "ml",
      "--dry-run=client",
      "-f",
      `${CHART}/ci/gpu-values.yaml`,
    ]);
    assert(r.ok, r.stderr);
    const notes = r.stdout.slice(r.stdout.indexOf("NOTES:"));
    assertStringIncludes(notes, "kubectl -n ml port-forward svc/bf-bertforge-inference 50054 50055");
    assertStringIncludes(notes, "(2 x nvidia.com/gpu per pod)");
    assertStringIncludes(notes, "get secret bertforge-token -o jsonpath='{.data.bearer}'");
    assertStringIncludes(notes, "--tls-ca");
    assert(!notes.includes("WARNING"), "auth and TLS are on: nothing to warn about");
  },
});

Deno.test({
  name:
    "NOTES.txt says plainly at install that auth and TLS are off by default, with the values to turn them on",
  ignore,
  async fn() {
    const r = await helm(HELM!, ["install", "bf", CHART, "-n", "ml", "--dry-run=client"]);
    assert(r.ok, r.stderr);
    const notes = r.stdout.slice(r.stdout.indexOf("NOTES:"));
    assertStringIncludes(notes, "WARNING: authentication is OFF");
    assertStringIncludes(notes, "TLS is OFF");
    assertStringIncludes(notes, "--set auth.enabled=true");
    assertStringIncludes(notes, "--set tls.enabled=true");
  },
});

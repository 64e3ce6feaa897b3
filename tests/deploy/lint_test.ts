/**
 * yamllint (Debian's, installed by `make deploy-tools`) over the hand-written YAML of deploy/ and charts/, and
 * over the chart as helm renders it, where it catches duplicate keys that a YAML parser silently overwrites.
 */
import { assert } from "@std/assert";
import { CHART, findHelm, helm, ROOT } from "./_helm.ts";

function has(cmd: string): boolean {
  try {
    return new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}
const YAMLLINT = has("yamllint");
if (!YAMLLINT) console.warn("lint_test: yamllint not found; run `make deploy-tools` to lint the YAML");
const HELM = findHelm();

async function yamllint(args: string[], stdin?: string): Promise<{ ok: boolean; out: string }> {
  const p = new Deno.Command("yamllint", {
    args: ["-f", "parsable", ...args],
    cwd: ROOT,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const r = await p.output();
  const dec = new TextDecoder();
  return { ok: r.success, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

Deno.test({
  name: "yamllint passes the hand-written YAML of deploy/ and charts/",
  ignore: !YAMLLINT,
  async fn() {
    const files = [
      "deploy/compose.yaml",
      "deploy/compose.gpu.yaml",
      "deploy/otel/collector.yaml",
      "deploy/yamllint.yaml",
      "charts/bertforge/Chart.yaml",
      "charts/bertforge/values.yaml",
      "charts/bertforge/ci",
    ];
    const r = await yamllint(["-c", "deploy/yamllint.yaml", ...files]);
    assert(r.ok, r.out);
  },
});

// Rendered output is machine-indented (toYaml writes unindented lists), so only structure is checked here.
const RENDERED_RULES = JSON.stringify({
  extends: "default",
  rules: {
    "line-length": "disable",
    "document-start": "disable",
    "indentation": { "indent-sequences": "whatever" },
    "comments": "disable",
    "comments-indentation": "disable",
    "key-duplicates": "enable",
    "truthy": { "allowed-values": ["true", "false"], "check-keys": false },
  },
});

Deno.test({
  name: "yamllint passes the rendered chart (no duplicate keys, no broken indentation)",
  ignore: !YAMLLINT || !HELM,
  async fn() {
    for (
      const values of [[], ["ci/gpu-values.yaml"], ["ci/cpu-values.yaml"], ["ci/external-minio-values.yaml"]]
    ) {
      const r = await helm(HELM!, [
        "template",
        "rel",
        CHART,
        ...values.flatMap((v) => ["-f", `${CHART}/${v}`]),
      ]);
      assert(r.ok, r.stderr);
      const lint = await yamllint(["-d", RENDERED_RULES, "-"], r.stdout);
      assert(lint.ok, `${values}: ${lint.out}`);
    }
  },
});

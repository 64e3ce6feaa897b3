/**
 * charts/bertforge/values.yaml, its example values files and values.schema.json checked with ajv, so the
 * chart's inputs are tested even where helm is absent; plus the rule that every key has a `## @param` line.
 */
import { assert, assertEquals } from "@std/assert";
import { parse } from "@std/yaml";
import { Ajv } from "ajv";
import { CHART } from "./_helm.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
const schema = JSON.parse(Deno.readTextFileSync(`${CHART}/values.schema.json`));
const valuesText = Deno.readTextFileSync(`${CHART}/values.yaml`);
const defaults = parse(valuesText) as Any;
const ajv = new Ajv({ allErrors: true, strict: false });
const check = ajv.compile(schema);

/** Helm's merge of a values file over the defaults: maps merge key by key, everything else is replaced. */
function over(base: Any, top: Any): Any {
  if (!isMap(base) || !isMap(top)) return structuredClone(top);
  const out = structuredClone(base);
  for (const [k, v] of Object.entries(top)) out[k] = k in base ? over(base[k], v) : structuredClone(v);
  return out;
}
const isMap = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v);

/** A copy of the defaults with `path` (dotted) set to `value`, as `--set path=value` would. */
function withSet(path: string, value: unknown): Any {
  const v = structuredClone(defaults);
  const keys = path.split(".");
  let at = v;
  for (const k of keys.slice(0, -1)) at = at[k] ??= {};
  at[keys.at(-1)!] = value;
  return v;
}

const errors = () =>
  (check.errors ?? []).map((e: { instancePath: string; message?: string }) =>
    `${e.instancePath} ${e.message}`
  ).join("; ");

Deno.test("values.yaml and every ci/*-values.yaml merged over it satisfy values.schema.json", () => {
  assert(check(defaults), `values.yaml: ${errors()}`);
  for (const e of Deno.readDirSync(`${CHART}/ci`)) {
    const merged = over(defaults, parse(Deno.readTextFileSync(`${CHART}/ci/${e.name}`)));
    assert(check(merged), `ci/${e.name}: ${errors()}`);
  }
});

Deno.test("values.schema.json rejects unknown keys, bad enums and ports, and an incomplete external store", () => {
  const bad: [string, unknown, RegExp][] = [
    ["trainer.gpus", 1, /must NOT have additional properties/],
    ["inference.backend", "cuda", /must be equal to one of the allowed values/],
    ["trainer.tolerationsPolicy", "merge", /allowed values/],
    ["tokenizer.port", 70000, /must be <= 65535/],
    ["inference.autoscaling.targetCPUUtilizationPercentage", 0, /must be >= 1/],
    ["minio.enabled", false, /store\/external\/endpoint must NOT have fewer than 1 characters/],
    ["store.bucket", "Not_A_Bucket", /store\/bucket must match pattern/],
    ["auth.token", "short", /auth\/token/],
    ["otel.endpoint", "collector:4318", /otel\/endpoint must match pattern/],
  ];
  for (const [path, value, msg] of bad) {
    assert(!check(withSet(path, value)), `${path}=${value} accepted`);
    assert(msg.test(errors()), `${path}=${value}: ${errors()}`);
  }
  const external = over(defaults, {
    minio: { enabled: false },
    store: { external: { endpoint: "https://s3.example.com", existingSecret: "s3" } },
  });
  assert(check(external), errors());
});

/** Every dotted key path of a values tree, maps descended, lists and scalars as leaves. */
function keyPaths(v: Any, prefix = ""): string[] {
  if (!isMap(v)) return [prefix];
  const own = prefix ? [prefix] : [];
  return [...own, ...Object.entries(v).flatMap(([k, x]) => keyPaths(x, prefix ? `${prefix}.${k}` : k))];
}

Deno.test("every key of values.yaml is documented by a ## @param line, and every @param names a real key", () => {
  const params = new Set([...valuesText.matchAll(/^## @param (\S+)/gm)].map((m) => m[1]!));
  const paths = new Set(keyPaths(defaults));
  const undocumented = [...paths].filter((p) => {
    // A key is covered by its own @param or by one on a parent documented as a whole (e.g. `resources`).
    const parts = p.split(".");
    const covered = parts.some((_, i) => params.has(parts.slice(0, i + 1).join(".")));
    const isParent = [...params].some((q) => q.startsWith(`${p}.`));
    return !covered && !isParent;
  });
  assertEquals(undocumented, []);
  assertEquals([...params].filter((p) => !paths.has(p)), [], "@param lines for keys that do not exist");
});

Deno.test("the schema describes exactly the top-level keys values.yaml has", () => {
  assertEquals(Object.keys(schema.properties).sort(), Object.keys(defaults).sort());
});

Deno.test("charts/bertforge/README.md's parameter table is the one values.yaml generates (make chart-readme)", async () => {
  const copy = await Deno.makeTempFile({ suffix: ".md" });
  const committed = await Deno.readTextFile(`${CHART}/README.md`);
  await Deno.writeTextFile(copy, committed);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "npm:@bitnami/readme-generator-for-helm@2.7.2",
      "-v",
      `${CHART}/values.yaml`,
      "-r",
      copy,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const regenerated = await Deno.readTextFile(copy);
  await Deno.remove(copy);
  assert(out.success, new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr));
  assert(regenerated === committed, "the README's table is stale: run `make chart-readme`");
});

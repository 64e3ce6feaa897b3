/**
 * Renders charts/bertforge with the real helm binary and validates what comes out against the Kubernetes
 * 1.27 JSON schemas of `kubernetes-models`. helm comes from `make deploy-tools` (.tools/helm/helm, from npm).
 */
import { parseAll } from "@std/yaml";
import { fromFileUrl } from "@std/path";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { Service } from "kubernetes-models/v1/Service";
import { Secret } from "kubernetes-models/v1/Secret";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { Job } from "kubernetes-models/batch/v1/Job";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";

export const ROOT = fromFileUrl(new URL("../../", import.meta.url));
export const CHART = `${ROOT}charts/bertforge`;

export type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  // deno-lint-ignore no-explicit-any
  [k: string]: any;
};

/** The helm binary: $HELM_BIN, then .tools/helm/helm, then PATH; null when none runs. */
export function findHelm(): string | null {
  const candidates = [Deno.env.get("HELM_BIN"), `${ROOT}.tools/helm/helm`, "helm"].filter((c): c is string =>
    !!c
  );
  for (const bin of candidates) {
    try {
      if (
        new Deno.Command(bin, { args: ["version", "--short"], stdout: "null", stderr: "null" }).outputSync()
          .success
      ) {
        return bin;
      }
    } catch { /* not there: try the next */ }
  }
  return null;
}

/** Runs helm; resolves to stdout, or throws with helm's stderr. */
export async function helm(
  bin: string,
  args: string[],
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  const out = await new Deno.Command(bin, { args, cwd: ROOT, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { ok: out.success, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** `helm template` of the chart with values files (paths relative to the chart) and --set pairs. */
export async function render(
  bin: string,
  valuesFiles: string[] = [],
  sets: string[] = [],
): Promise<Manifest[]> {
  const args = ["template", "rel", CHART, "--namespace", "ml"];
  for (const f of valuesFiles) args.push("-f", `${CHART}/${f}`);
  for (const s of sets) args.push("--set", s);
  const r = await helm(bin, args);
  if (!r.ok) throw new Error(`helm ${args.join(" ")} failed:\n${r.stderr}`);
  return (parseAll(r.stdout) as (Manifest | null)[]).filter((m): m is Manifest => m !== null);
}

// deno-lint-ignore no-explicit-any
const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "v1/Service": Service,
  "v1/Secret": Secret,
  "v1/ServiceAccount": ServiceAccount,
  "batch/v1/Job": Job,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
};

/** Throws, naming the manifest, when it breaks its kind's schema or is of a kind this file does not know. */
export function validateManifest(m: Manifest): void {
  const key = `${m.apiVersion}/${m.kind}`;
  const Model = MODELS[key];
  if (!Model) {
    throw new Error(`${key} ${m.metadata?.name}: no schema known here; add its kubernetes-models class`);
  }
  try {
    new Model(m).validate();
  } catch (e) {
    throw new Error(`${key} ${m.metadata.name}: ${(e as Error).message}`);
  }
}

/** The one manifest of a kind and name; throws when absent. */
export function find(ms: Manifest[], kind: string, name: string): Manifest {
  const m = ms.find((x) => x.kind === kind && x.metadata.name === name);
  if (!m) {
    throw new Error(`no ${kind} ${name} among ${ms.map((x) => `${x.kind}/${x.metadata.name}`).join(", ")}`);
  }
  return m;
}

/** Environment of a Deployment's first container as name → value (or "secret:<name>/<key>"). */
export function envOf(d: Manifest): Map<string, string> {
  const env = new Map<string, string>();
  for (const e of d.spec.template.spec.containers[0].env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    env.set(e.name, ref ? `secret:${ref.name}/${ref.key}` : e.value);
  }
  return env;
}

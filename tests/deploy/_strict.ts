/**
 * Unknown-field check for rendered manifests, like `kubeconform -strict`. The JSON schemas of kubernetes-models
 * allow any extra property, so a field indented one level too deep (say `runtimeClassName` inside a container)
 * would pass them; the API server would drop it or refuse it. The package's .d.ts files list each object's
 * fields, and this walks a manifest along them.
 */
import { dirname, join } from "@std/path";
import { ROOT } from "./_helm.ts";

const PKG = Deno.realPathSync(`${ROOT}node_modules/kubernetes-models`);
// The package's own dependencies (@kubernetes-models/apimachinery, ...) sit beside it.
const PKG_DEPS = dirname(PKG);

type Shape = { fields: Map<string, string>; imports: Map<string, string> } | null;
const shapes = new Map<string, Shape>();

/** `"name"?: type;` members at the top level of an interface or inline object body (comments removed). */
function members(body: string): Map<string, string> {
  const fields = new Map<string, string>();
  const re = /"([^"]+)"\??:\s*/g;
  let depth = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c === "{" || c === "<" || c === "(") depth++;
    else if (c === "}" || c === ">" || c === ")") depth--;
    else if (c === '"' && depth === 0) {
      re.lastIndex = i;
      const m = re.exec(body);
      if (!m || m.index !== i) continue;
      // The type runs to the first `;` outside any bracket.
      let j = re.lastIndex, d = 0;
      for (; j < body.length; j++) {
        const t = body[j]!;
        if (t === "{" || t === "<" || t === "(") d++;
        else if (t === "}" || t === ">" || t === ")") d--;
        else if (t === ";" && d === 0) break;
      }
      fields.set(m[1]!, body.slice(re.lastIndex, j).replace(/\s+/g, " ").trim());
      i = j;
    }
  }
  return fields;
}

/** Fields (name → type text) of the interface a .d.ts declares, with where its imported types live. */
function shapeOf(file: string): Shape {
  if (shapes.has(file)) return shapes.get(file)!;
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch {
    shapes.set(file, null);
    return null;
  }
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
    const spec = m[2]!.replace(/\.js$/, "");
    const target = spec.startsWith(".") ? join(dirname(file), spec) : join(PKG_DEPS, spec);
    for (const name of m[1]!.split(",")) imports.set(name.trim(), `${target}.d.ts`);
  }
  const body = /^export interface I\w+(?: extends [\w, ]+)? \{\n([\s\S]*?)\n\}$/m.exec(text)?.[1];
  const shape = body === undefined
    ? null
    : { fields: members(body.replace(/\/\*\*[\s\S]*?\*\//g, "")), imports };
  shapes.set(file, shape);
  return shape;
}

function walk(value: unknown, type: string, from: NonNullable<Shape>, path: string, out: string[]): void {
  if (value === null || typeof value !== "object") return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, array[1]!, from, `${path}[${i}]`, out));
    return;
  }
  const map = /^\{ \[key: string\]: (.+?);? \}$/.exec(type);
  if (map) {
    for (const [k, v] of Object.entries(value)) walk(v, map[1]!, from, `${path}.${k}`, out);
    return;
  }
  if (type.startsWith("{")) {
    check(
      value as Record<string, unknown>,
      { fields: members(type.slice(1, -1)), imports: from.imports },
      path,
      out,
    );
    return;
  }
  const file = from.imports.get(type);
  if (!file) return; // a scalar, a union or a type this walk cannot see into
  const shape = shapeOf(file);
  if (shape) check(value as Record<string, unknown>, shape, path, out);
}

function check(obj: Record<string, unknown>, shape: NonNullable<Shape>, path: string, out: string[]): void {
  for (const [k, v] of Object.entries(obj)) {
    const type = shape.fields.get(k);
    if (type === undefined) out.push(`${path}.${k}`);
    else walk(v, type, shape, `${path}.${k}`, out);
  }
}

/** Paths of the fields in `manifest` that its kind does not define; empty when there are none. */
export function unknownFields(manifest: { apiVersion: string; kind: string }): string[] {
  const [group, version] = manifest.apiVersion.includes("/")
    ? manifest.apiVersion.split("/") as [string, string]
    : ["", manifest.apiVersion];
  const shape = shapeOf(join(PKG, group, version, `${manifest.kind}.d.ts`));
  if (!shape) {
    throw new Error(`no field list for ${manifest.apiVersion} ${manifest.kind} in kubernetes-models`);
  }
  const out: string[] = [];
  check(manifest as unknown as Record<string, unknown>, shape, manifest.kind, out);
  return out;
}

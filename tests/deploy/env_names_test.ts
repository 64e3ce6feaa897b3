/**
 * Keeps deploy/ and charts/ honest: every BERTFORGE_* variable they set is one docs/conventions.md lists and
 * the services' code reads, and every OTEL_* one is read by the telemetry code (it names each service itself,
 * so OTEL_SERVICE_NAME, for one, would be set for nothing).
 */
import { assertEquals } from "@std/assert";
import { walk } from "@std/fs";
import { ROOT } from "./_helm.ts";

const DEPLOY_DIRS = ["deploy", "charts/bertforge"];

async function textsUnder(dirs: string[], accept: (path: string) => boolean): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const dir of dirs) {
    for await (const e of walk(`${ROOT}${dir}`, { includeDirs: false })) {
      if (accept(e.path)) out.set(e.path.slice(ROOT.length), await Deno.readTextFile(e.path));
    }
  }
  return out;
}

function namesIn(text: string, prefix: string): Set<string> {
  return new Set([...text.matchAll(new RegExp(`\\b${prefix}_[A-Z0-9_]*[A-Z0-9]\\b`, "g"))].map((m) => m[0]));
}

const deployFiles = await textsUnder(DEPLOY_DIRS, (p) => !p.endsWith(".md"));

Deno.test("every BERTFORGE_* variable in deploy/ and charts/ is documented in docs/conventions.md", async () => {
  const conventions = await Deno.readTextFile(`${ROOT}docs/conventions.md`);
  const documented = namesIn(conventions, "BERTFORGE");
  const missing: string[] = [];
  for (const [path, text] of deployFiles) {
    for (const name of namesIn(text, "BERTFORGE")) {
      if (!documented.has(name)) missing.push(`${path}: ${name}`);
    }
  }
  assertEquals(missing, []);
});

const code = await textsUnder(["services"], (p) => p.endsWith(".ts") && !p.endsWith("_test.ts"));

for (const prefix of ["BERTFORGE", "OTEL"]) {
  Deno.test(`every ${prefix}_* variable in deploy/ and charts/ is read somewhere in services/`, () => {
    const read = new Set<string>();
    for (const text of code.values()) for (const n of namesIn(text, prefix)) read.add(n);
    const unread: string[] = [];
    for (const [path, text] of deployFiles) {
      for (const name of namesIn(text, prefix)) if (!read.has(name)) unread.push(`${path}: ${name}`);
    }
    assertEquals(unread, []);
  });
}

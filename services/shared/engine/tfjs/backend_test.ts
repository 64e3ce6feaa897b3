import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { Unavailable } from "../../errors.ts";
import { findTfjsNode, tf, useBackend } from "./backend.ts";

/** A stand-in tfjs-node package in a temp node_modules, found through BERTFORGE_NODE_MODULES. */
async function fakeTfjsNode(main: string, withAddon: boolean): Promise<string> {
  const base = await Deno.makeTempDir();
  const dir = join(base, "@tensorflow", "tfjs-node");
  await Deno.mkdir(join(dir, "lib", "napi-v8"), { recursive: true });
  await Deno.writeTextFile(
    join(dir, "package.json"),
    JSON.stringify({ name: "@tensorflow/tfjs-node", main: "index.js" }),
  );
  await Deno.writeTextFile(join(dir, "index.js"), main);
  if (withAddon) await Deno.writeFile(join(dir, "lib", "napi-v8", "tfjs_binding.node"), new Uint8Array());
  return base;
}

async function withNodeModules<T>(base: string, fn: () => T | Promise<T>): Promise<T> {
  Deno.env.set("BERTFORGE_NODE_MODULES", base);
  try {
    return await fn();
  } finally {
    Deno.env.delete("BERTFORGE_NODE_MODULES");
    await Deno.remove(base, { recursive: true });
  }
}

Deno.test("the tensorflow backend is unavailable, with the reason, when tfjs-node is absent or broken", async () => {
  const absent = findTfjsNode();
  assert("reason" in absent && absent.reason.includes("neither"), JSON.stringify(absent));
  await assertRejects(() => useBackend("tensorflow"), Unavailable, "tfjs-node");
  const noAddon = await fakeTfjsNode("module.exports = {};", false);
  await withNodeModules(noAddon, () => {
    const found = findTfjsNode();
    assert(
      "reason" in found && found.reason.includes("--allow-scripts=npm:@tensorflow/tfjs-node"),
      JSON.stringify(found),
    );
  });
  const throwing = await fakeTfjsNode(
    "throw new Error('libtensorflow.so.2: cannot open shared object file');",
    true,
  );
  await withNodeModules(throwing, async () => {
    await assertRejects(() => useBackend("tensorflow"), Unavailable, "libtensorflow.so.2");
  });
});

Deno.test("useBackend('tensorflow') loads an installed tfjs-node and makes its backend active", async () => {
  // Stands in for tfjs-node: registers a 'tensorflow' backend in tfjs' global engine, as the real one does.
  const main = `const engine = globalThis._tfengine;
    engine.registerBackend("tensorflow", engine.registryFactory.cpu.factory, 0);`;
  const base = await fakeTfjsNode(main, true);
  await withNodeModules(base, async () => {
    await useBackend("cpu"); // initialises tfjs' engine in the global namespace
    const found = findTfjsNode();
    assert("dir" in found, JSON.stringify(found));
    await useBackend("tensorflow");
    assertEquals(tf.getBackend(), "tensorflow");
    await tf.setBackend("cpu");
    tf.removeBackend("tensorflow");
  });
});

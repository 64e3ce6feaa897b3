/**
 * Where the optional TensorFlow.js pieces live on disk, without importing TensorFlow.js (so the backend selector
 * can rule `tensorflow` out cheaply).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";

/** Packages that provide the `tensorflow` backend, GPU first. */
const TFJS_NODE_PACKAGES = ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"];

/** node_modules folders to look in: BERTFORGE_NODE_MODULES, then the working directory's, then the repo's. */
export function nodeModulesDirs(): string[] {
  const dirs: string[] = [];
  const fromEnv = Deno.env.get("BERTFORGE_NODE_MODULES");
  if (fromEnv) dirs.push(fromEnv);
  dirs.push(join(Deno.cwd(), "node_modules"));
  dirs.push(new URL("../../../../node_modules", import.meta.url).pathname);
  return [...new Set(dirs)];
}

/** Where the tfjs-node addon is installed and usable, or why not. */
export function findTfjsNode(): { dir: string; pkg: string } | { reason: string } {
  for (const base of nodeModulesDirs()) {
    for (const pkg of TFJS_NODE_PACKAGES) {
      const dir = join(base, pkg);
      if (!existsSync(join(dir, "package.json"))) continue;
      if (existsSync(join(dir, "lib", "napi-v8", "tfjs_binding.node"))) return { dir, pkg };
      return {
        reason: `${pkg} is in ${base} but its addon lib/napi-v8/tfjs_binding.node is missing ` +
          `(install it with: deno install --allow-scripts=npm:${pkg})`,
      };
    }
  }
  return {
    reason: `neither ${TFJS_NODE_PACKAGES.join(" nor ")} is installed (optional; the GPU image has it)`,
  };
}

/**
 * Loading TensorFlow.js backends under Deno.
 *
 * - `cpu`: `@tensorflow/tfjs-backend-cpu`, pure JavaScript, always available.
 * - `wasm`: `@tensorflow/tfjs-backend-wasm`; its .wasm binaries are read from node_modules (setWasmPaths), since
 *   the default (a CDN URL next to the script) is unreachable here.
 * - `tensorflow`: `@tensorflow/tfjs-node-gpu` or `@tensorflow/tfjs-node` (libtensorflow through a N-API addon).
 *   Their install script downloads libtensorflow, so they are NOT in deno.json; the GPU image installs one with
 *   `deno install --allow-scripts=npm:@tensorflow/tfjs-node-gpu` (the Deno workaround of tensorflow/tfjs#8579,
 *   #8581: without allowed scripts the addon `lib/napi-v8/tfjs_binding.node` is missing). We only import it when
 *   that addon file exists, so a machine without it fails fast with a reason instead of a crash.
 *
 * tfjs keeps one global engine (shared across copies of tfjs-core through the global namespace), so a process
 * runs one tfjs backend at a time; `useBackend` switches it.
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
// tfjs-core's CommonJS build registers no gradient functions and its ESM register_all_gradients uses
// extensionless imports Deno cannot load; the union package's bundle registers them into the global registry.
import "@tensorflow/tfjs";
import { setThreadsCount, setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Unavailable } from "../../errors.ts";
import { findTfjsNode, nodeModulesDirs } from "./locate.ts";

export { findTfjsNode };

export type TfjsBackendName = "tensorflow" | "wasm" | "cpu";

let tensorflowLoaded = false;

function loadTensorflow(): void {
  if (tensorflowLoaded) return;
  const found = findTfjsNode();
  if ("reason" in found) throw new Unavailable(`tfjs backend 'tensorflow' unavailable: ${found.reason}`);
  // CommonJS require of the package folder itself: its main, with its own dependencies resolved beside it.
  const require = createRequire(join(found.dir, "package.json"));
  try {
    require(found.dir);
  } catch (e) {
    throw new Unavailable(
      `tfjs backend 'tensorflow' unavailable: ${found.pkg} failed to load: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  if (!tf.findBackend("tensorflow")) {
    throw new Unavailable(
      `${found.pkg} loaded but registered no 'tensorflow' backend (tfjs-core version mismatch?)`,
    );
  }
  tensorflowLoaded = true;
}

function wasmDir(): string | undefined {
  for (const base of nodeModulesDirs()) {
    const dir = join(base, "@tensorflow", "tfjs-backend-wasm", "dist");
    if (existsSync(join(dir, "tfjs-backend-wasm.wasm"))) return dir + "/";
  }
  return undefined;
}

/**
 * Makes `name` the active tfjs backend, loading it first. Throws Unavailable with the reason when it cannot load.
 * `threads` sets the wasm thread pool where the threaded build is usable.
 */
export async function useBackend(
  name: TfjsBackendName,
  options: { threads?: number } = {},
): Promise<typeof tf> {
  if (name === "tensorflow") loadTensorflow();
  if (name === "wasm") {
    const dir = wasmDir();
    if (!dir) {
      throw new Unavailable(
        "tfjs backend 'wasm' unavailable: @tensorflow/tfjs-backend-wasm/dist/*.wasm not found",
      );
    }
    setWasmPaths(dir);
    if (options.threads) setThreadsCount(options.threads);
  }
  tf.env().set("PROD", true);
  if (tf.getBackend() !== name) {
    let ok = false;
    try {
      ok = await tf.setBackend(name);
    } catch (e) {
      throw new Unavailable(`tfjs backend '${name}' failed to initialise: ${(e as Error).message}`, {
        cause: e,
      });
    }
    if (!ok) throw new Unavailable(`tfjs backend '${name}' failed to initialise`);
  }
  await tf.ready();
  // PROD: no debug checks in the hot path, and no "install tfjs-node" banner from the cpu backend on first use.
  tf.env().set("DEBUG", false);
  tf.env().set("PROD", true);
  return tf;
}

export { tf };

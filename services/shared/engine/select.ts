/**
 * Backend selection: `createEngine({..., backend})` with `backend` from the option, else BERTFORGE_BACKEND, else
 * `auto`. `auto` tries the fastest first and takes the first that loads:
 *
 *   tensorflow  tfjs-node(-gpu): libtensorflow, CUDA where present (only in images that installed it)
 *   native      our OpenBLAS + C-kernel engine (needs libopenblas; the CPU default)
 *   wasm        TensorFlow.js WebAssembly backend (SIMD)
 *   cpu         TensorFlow.js plain JavaScript backend (always loads; slowest)
 *
 * and logs which it picked and why the faster ones were passed over. A backend named explicitly that cannot load
 * is an Unavailable error with the reason, never a silent fallback.
 */
import { InvalidArgument, Unavailable } from "../errors.ts";
import type { BackendName, Engine, EngineOptions } from "./engine.ts";
import { findTfjsNode } from "./tfjs/locate.ts";

export type BackendChoice = "auto" | BackendName;

export const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "native", "tensorflow", "wasm", "cpu"];

/** The order `auto` tries, fastest first. */
export const AUTO_ORDER: readonly BackendName[] = ["tensorflow", "native", "wasm", "cpu"];

export interface CreateEngineOptions extends EngineOptions {
  /** @default BERTFORGE_BACKEND, else "auto" */
  backend?: BackendChoice;
  /** Where the choice is reported; default one line on stderr. */
  log?: (message: string) => void;
}

/** The requested backend: the option, else BERTFORGE_BACKEND, else auto. Unknown names are an InvalidArgument. */
export function requestedBackend(option?: string): BackendChoice {
  const fromEnv = Deno.env.get("BERTFORGE_BACKEND");
  const value = option ?? (fromEnv === "" ? undefined : fromEnv) ?? "auto";
  if (!BACKEND_CHOICES.includes(value as BackendChoice)) {
    const source = option !== undefined ? "backend" : "BERTFORGE_BACKEND";
    throw new InvalidArgument(
      `${source} must be one of ${BACKEND_CHOICES.join("|")}: current value is '${value}'`,
    );
  }
  return value as BackendChoice;
}

/** Builds one named backend's engine, or throws (Unavailable with the reason when it cannot load). */
async function createOne(backend: BackendName, options: EngineOptions): Promise<Engine> {
  if (backend === "native") {
    let mod: { createNativeEngine: (o: EngineOptions) => Engine | Promise<Engine> };
    try {
      mod = await import("./native/mod.ts");
    } catch (e) {
      throw new Unavailable(`native engine failed to load: ${(e as Error).message}`, { cause: e });
    }
    return await mod.createNativeEngine(options);
  }
  if (backend === "tensorflow") {
    // Cheap check first, so `auto` does not pay for importing tfjs when the addon is not there.
    const found = findTfjsNode();
    if ("reason" in found) throw new Unavailable(`tensorflow backend unavailable: ${found.reason}`);
  }
  const { createTfjsEngine } = await import("./tfjs/mod.ts");
  return await createTfjsEngine({ ...options, backend });
}

/**
 * Creates an engine on the requested backend (see the module doc for `auto`). The engine's `backend` field says
 * which one runs.
 */
export async function createEngine(options: CreateEngineOptions): Promise<Engine> {
  const { backend: option, log = (m: string) => console.error(m), ...engineOptions } = options;
  const requested = requestedBackend(option);
  if (requested !== "auto") {
    const engine = await createOne(requested, engineOptions);
    log(`engine: backend '${requested}' (asked for by name)`);
    return engine;
  }
  const passedOver: string[] = [];
  for (const backend of AUTO_ORDER) {
    try {
      const engine = await createOne(backend, engineOptions);
      const why = passedOver.length ? `; passed over ${passedOver.join("; ")}` : "";
      log(`engine: backend '${backend}' (auto: fastest that loads${why})`);
      return engine;
    } catch (e) {
      // Only "cannot load here" moves on; a bad config or option is the caller's error on every backend.
      if (e instanceof InvalidArgument) throw e;
      passedOver.push(`${backend}: ${(e as Error).message}`);
    }
  }
  throw new Unavailable(`no engine backend loads: ${passedOver.join("; ")}`);
}

/**
 * The BERT engine: one model behind one interface (engine.ts), several backends (native OpenBLAS, TensorFlow.js
 * on tensorflow/wasm/cpu), picked by `createEngine` (select.ts) from `backend` or BERTFORGE_BACKEND.
 *
 * ```ts
 * import { createEngine } from "./services/shared/engine/mod.ts";
 * import { presetConfig } from "./services/shared/model/config.ts";
 * const engine = await createEngine({ config: presetConfig("bert-mini", 21128), head: { task: "pretrain" } });
 * const stats = engine.trainStep(batch);
 * engine.dispose();
 * ```
 */
export * from "./engine.ts";
export * from "./select.ts";

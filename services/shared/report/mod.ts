/**
 * SVG charts for training reports: loss and learning-rate curves, accuracy over steps, confusion matrices.
 *
 * ```ts
 * import { lossCurveSvg } from "./mod.ts";
 * await Deno.writeTextFile("loss.svg", lossCurveSvg({ loss: [[1, 9.8], [2, 9.1]], learningRate: [[1, 1e-4], [2, 9e-5]] }));
 * ```
 */
export * from "./svg.ts";

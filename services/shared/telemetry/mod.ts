/**
 * OpenTelemetry tracing, off unless the standard `OTEL_*` variables (or an exporter) turn it on.
 * The rpc layer calls {@linkcode setupTelemetry} in serve()/client setup and carries the trace context in
 * gRPC metadata; services add their own spans with {@linkcode withSpan}.
 *
 * ```ts
 * import { setupTelemetry, withSpan } from "../shared/telemetry/mod.ts";
 *
 * const telemetry = setupTelemetry({ serviceName: "bertforge-trainer" }); // no-op without OTEL_* settings
 * await withSpan("train.step", { step: 12 }, async (span) => {
 *   span.setAttribute("loss", 2.31);
 * });
 * await telemetry.shutdown(); // flushes
 * ```
 *
 * @module
 */
export * from "./otel.ts";

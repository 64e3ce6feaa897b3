/**
 * The service's metrics in the Prometheus text format (served at `GET /metrics` on the HTTP port): counters,
 * gauges and histograms with labels, kept in plain maps. Names follow TEI's `te_*` set under a `bertforge_`
 * prefix: queue depth, batch size and tokens, queue/inference/request latency per model and method.
 *
 * Every observation is mirrored to OpenTelemetry instruments of the same name (`@opentelemetry/api`), which
 * cost nothing until a MeterProvider is registered (OTEL_* configuration), and then export over OTLP.
 */
import { metrics as otelMetrics } from "@opentelemetry/api";

const meter = otelMetrics.getMeter("bertforge-inference");

type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  return keys.map((k) => `${k}="${escapeLabel(labels[k]!)}"`).join(",");
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

abstract class Metric {
  constructor(readonly name: string, readonly help: string) {}
  abstract readonly type: string;
  abstract lines(): string[];
  render(): string {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`, ...this.lines()].join(
      "\n",
    );
  }
}

export class Counter extends Metric {
  readonly type = "counter";
  readonly #values = new Map<string, number>();
  readonly #otel = meter.createCounter(this.name, { description: this.help });
  inc(labels: Labels = {}, by = 1): void {
    this.#otel.add(by, labels);
    const key = labelKey(labels);
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
  }
  get(labels: Labels = {}): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  lines(): string[] {
    return [...this.#values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ""} ${v}`);
  }
}

export class Gauge extends Metric {
  readonly type = "gauge";
  readonly #values = new Map<string, number>();
  readonly #otel = meter.createGauge(this.name, { description: this.help });
  set(value: number, labels: Labels = {}): void {
    this.#otel.record(value, labels);
    this.#values.set(labelKey(labels), value);
  }
  get(labels: Labels = {}): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  lines(): string[] {
    return [...this.#values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ""} ${v}`);
  }
}

export class Histogram extends Metric {
  readonly type = "histogram";
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();
  readonly #otel;
  constructor(name: string, help: string, readonly buckets: readonly number[]) {
    super(name, help);
    this.#otel = meter.createHistogram(name, {
      description: help,
      advice: { explicitBucketBoundaries: [...buckets] },
    });
  }
  observe(value: number, labels: Labels = {}): void {
    this.#otel.record(value, labels);
    const key = labelKey(labels);
    let series = this.#series.get(key);
    if (!series) {
      series = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, series);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) series.counts[i]!++;
    series.sum += value;
    series.count++;
  }
  count(labels: Labels = {}): number {
    return this.#series.get(labelKey(labels))?.count ?? 0;
  }
  lines(): string[] {
    const out: string[] = [];
    for (const [key, series] of this.#series) {
      const prefix = key ? `${key},` : "";
      this.buckets.forEach((bound, i) =>
        out.push(`${this.name}_bucket{${prefix}le="${bound}"} ${series.counts[i]}`)
      );
      out.push(`${this.name}_bucket{${prefix}le="+Inf"} ${series.count}`);
      out.push(`${this.name}_sum${key ? `{${key}}` : ""} ${series.sum}`);
      out.push(`${this.name}_count${key ? `{${key}}` : ""} ${series.count}`);
    }
    return out;
  }
}

const LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
const BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const BATCH_TOKENS = [16, 64, 256, 1024, 4096, 16384, 65536];

/** Every metric the inference service exports. */
export class InferenceMetrics {
  readonly queueDepth = new Gauge("bertforge_queue_size", "Inputs waiting in the batch queue");
  readonly inFlight = new Gauge("bertforge_requests_in_flight", "Inputs admitted and not yet answered");
  readonly batchSize = new Histogram("bertforge_batch_size", "Inputs per forward pass", BATCH_SIZES);
  readonly batchTokens = new Histogram(
    "bertforge_batch_tokens",
    "Padded tokens (B*T) per forward pass",
    BATCH_TOKENS,
  );
  readonly queueTime = new Histogram(
    "bertforge_queue_time_ms",
    "Time an input waited in the queue",
    LATENCY_MS,
  );
  readonly inferenceTime = new Histogram(
    "bertforge_inference_time_ms",
    "Forward time of the batch an input ran in",
    LATENCY_MS,
  );
  readonly requestTime = new Histogram(
    "bertforge_request_duration_ms",
    "Whole request time by method and protocol",
    LATENCY_MS,
  );
  readonly requests = new Counter("bertforge_requests_total", "Requests by method, protocol and status code");
  readonly overloaded = new Counter(
    "bertforge_overloaded_total",
    "Requests refused because the queue was full (429 / RESOURCE_EXHAUSTED)",
  );
  readonly modelsLoaded = new Gauge("bertforge_models_loaded", "Resident models");
  readonly modelMemory = new Gauge("bertforge_model_memory_bytes", "Memory attributed to resident models");
  readonly modelLoads = new Counter("bertforge_model_loads_total", "Model loads by outcome");

  render(): string {
    const all: Metric[] = [
      this.queueDepth,
      this.inFlight,
      this.batchSize,
      this.batchTokens,
      this.queueTime,
      this.inferenceTime,
      this.requestTime,
      this.requests,
      this.overloaded,
      this.modelsLoaded,
      this.modelMemory,
      this.modelLoads,
    ];
    return all.map((m) => m.render()).join("\n") + "\n";
  }
}

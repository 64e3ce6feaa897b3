/**
 * grpc.health.v1.Health with a status per service name: `""` is the whole server, and each bertforge
 * service has its full name (`bertforge.v1.InferenceService`). A service that is not ready yet (the
 * inference service loading its default models) sets NOT_SERVING, and Kubernetes `grpc:` probes,
 * `grpc_health_probe` and the fleet's start-up wait all read it.
 */
import * as grpc from "@grpc/grpc-js";

export type ServingStatus = "SERVING" | "NOT_SERVING";

type WatchStatus = ServingStatus | "SERVICE_UNKNOWN";

export class HealthService {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<grpc.ServerWritableStream<{ service: string }, unknown>>>();

  constructor(initial: Record<string, ServingStatus> = {}) {
    for (const [service, status] of Object.entries(initial)) this.#statuses.set(service, status);
  }

  /** Sets one service's status and tells its watchers. */
  setStatus(service: string, status: ServingStatus): void {
    if (this.#statuses.get(service) === status) return;
    this.#statuses.set(service, status);
    for (const call of this.#watchers.get(service) ?? []) call.write({ status });
  }

  /** Sets every known service (the server included) at once, e.g. NOT_SERVING while draining. */
  setAll(status: ServingStatus): void {
    for (const service of [...this.#statuses.keys()]) this.setStatus(service, status);
  }

  getStatus(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  /** Ends every Watch stream, so they do not hold a draining server open. */
  endWatches(): void {
    for (const calls of this.#watchers.values()) {
      for (const call of calls) call.end();
      calls.clear();
    }
  }

  /** The grpc-js implementation object for server.addService(). */
  implementation(): grpc.UntypedServiceImplementation {
    return {
      Check: (
        call: grpc.ServerUnaryCall<{ service: string }, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ) => {
        const status = this.#statuses.get(call.request.service);
        if (status === undefined) {
          callback({ code: grpc.status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
        } else callback(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
        const service = call.request.service;
        const status: WatchStatus = this.#statuses.get(service) ?? "SERVICE_UNKNOWN";
        call.write({ status });
        let calls = this.#watchers.get(service);
        if (!calls) this.#watchers.set(service, calls = new Set());
        calls.add(call);
        call.on("cancelled", () => calls.delete(call));
      },
    };
  }
}

/**
 * Loads the protos once, with one set of proto-loader options for the whole project. The options
 * change the JavaScript shape of every message, so they live here and nowhere else:
 * - `keepCase`: field names as written in the .proto (`job_id`, not `jobId`), the same as JSON output.
 * - `longs: String`: 64-bit integers arrive as decimal strings (no silent precision loss).
 * - `enums: String`: enum values arrive as their names (`"JOB_STATE_RUNNING"`), and may be sent either way.
 * - `defaults: true`: unset scalar fields read as their zero values, repeated fields as `[]`.
 * - `oneofs: true`: a oneof reads as a virtual field naming the member that is set (`spec: "pretrain"`).
 * Fields declared `optional` stay absent (undefined) when unset, so "0" and "not given" differ.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { fromFileUrl } from "@std/path";

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** The folder that holds `bertforge/v1/*.proto` and the vendored `grpc/` protos. */
export const PROTO_DIR: string = fromFileUrl(new URL("../../../protos", import.meta.url));

export const BERTFORGE_PROTO_FILES: readonly string[] = [
  "bertforge/v1/common.proto",
  "bertforge/v1/tokenizer.proto",
  "bertforge/v1/sharding.proto",
  "bertforge/v1/trainer.proto",
  "bertforge/v1/inference.proto",
];

export const HEALTH_PROTO_FILE = "grpc/health/v1/health.proto";
export const REFLECTION_PROTO_FILE = "grpc/reflection/v1/reflection.proto";

/** The four bertforge services by their proto name. */
export type ServiceName = "TokenizerService" | "ShardingService" | "TrainerService" | "InferenceService";

export const SERVICE_NAMES: readonly ServiceName[] = [
  "TokenizerService",
  "ShardingService",
  "TrainerService",
  "InferenceService",
];

export const PACKAGE = "bertforge.v1";
export const HEALTH_SERVICE = "grpc.health.v1.Health";

/** `TokenizerService` → `bertforge.v1.TokenizerService`, the name health checks and reflection use. */
export function fullServiceName(service: ServiceName): string {
  return `${PACKAGE}.${service}`;
}

let bertforgeDefinition: protoLoader.PackageDefinition | undefined;
let healthDefinition: protoLoader.PackageDefinition | undefined;
let reflectionDefinition: protoLoader.PackageDefinition | undefined;

/** The package definition of every bertforge proto (what reflection describes). Parsed once. */
export function bertforgePackageDefinition(): protoLoader.PackageDefinition {
  bertforgeDefinition ??= protoLoader.loadSync([...BERTFORGE_PROTO_FILES], {
    ...LOADER_OPTIONS,
    includeDirs: [PROTO_DIR],
  });
  return bertforgeDefinition;
}

export function healthPackageDefinition(): protoLoader.PackageDefinition {
  healthDefinition ??= protoLoader.loadSync(HEALTH_PROTO_FILE, {
    ...LOADER_OPTIONS,
    includeDirs: [PROTO_DIR],
  });
  return healthDefinition;
}

/** grpc.reflection.v1, for reflection clients (tests, tools). */
export function reflectionPackageDefinition(): protoLoader.PackageDefinition {
  reflectionDefinition ??= protoLoader.loadSync(REFLECTION_PROTO_FILE, {
    ...LOADER_OPTIONS,
    includeDirs: [PROTO_DIR],
  });
  return reflectionDefinition;
}

/** The grpc-js service definition of one bertforge service (its methods, serializers, paths). */
export function serviceDefinition(service: ServiceName): grpc.ServiceDefinition {
  const definition = bertforgePackageDefinition()[fullServiceName(service)];
  if (!definition || !isServiceDefinition(definition)) {
    throw new TypeError(
      `${fullServiceName(service)} is not a service in ${BERTFORGE_PROTO_FILES.join(", ")}`,
    );
  }
  return definition as unknown as grpc.ServiceDefinition;
}

export function healthServiceDefinition(): grpc.ServiceDefinition {
  return healthPackageDefinition()[HEALTH_SERVICE] as unknown as grpc.ServiceDefinition;
}

/** A grpc-js client constructor for any loaded service, by full name. */
export function clientConstructor(fullName: string): grpc.ServiceClientConstructor {
  const definition = bertforgePackageDefinition()[fullName] ?? healthPackageDefinition()[fullName] ??
    reflectionPackageDefinition()[fullName];
  if (!definition || !isServiceDefinition(definition)) throw new TypeError(`unknown service ${fullName}`);
  return grpc.makeGenericClientConstructor(definition as unknown as grpc.ServiceDefinition, fullName);
}

function isServiceDefinition(value: unknown): boolean {
  // A message type has `format`; a service definition is a plain map of method definitions.
  return typeof value === "object" && value !== null && !("format" in value) &&
    Object.values(value).every((m) => typeof m === "object" && m !== null && "path" in m);
}

/** The methods of a service: name → whether the request and the response are streams. */
export function methodsOf(
  service: ServiceName,
): Map<string, { requestStream: boolean; responseStream: boolean }> {
  const methods = new Map<string, { requestStream: boolean; responseStream: boolean }>();
  for (const [name, method] of Object.entries(serviceDefinition(service))) {
    methods.set(name, { requestStream: method.requestStream, responseStream: method.responseStream });
  }
  return methods;
}

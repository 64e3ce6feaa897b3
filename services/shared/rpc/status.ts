/**
 * The one mapping between bertforge's typed errors (services/shared/errors.ts) and gRPC status codes,
 * both ways: a thrown error becomes exactly one status on the server, and a status a client receives
 * becomes the matching typed error again, so a service can rethrow a peer's NOT_FOUND unchanged.
 */
import { status as GrpcStatus } from "@grpc/grpc-js";
import {
  AlreadyExists,
  BertforgeError,
  Cancelled,
  type ErrorCode,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  ResourceExhausted,
  Unauthenticated,
  Unavailable,
  Unimplemented,
} from "../errors.ts";

export { GrpcStatus };

const CODE_TO_GRPC: Record<ErrorCode, GrpcStatus> = {
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  NOT_FOUND: GrpcStatus.NOT_FOUND,
  ALREADY_EXISTS: GrpcStatus.ALREADY_EXISTS,
  FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: GrpcStatus.RESOURCE_EXHAUSTED,
  UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  CANCELLED: GrpcStatus.CANCELLED,
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  DEADLINE_EXCEEDED: GrpcStatus.DEADLINE_EXCEEDED,
  UNIMPLEMENTED: GrpcStatus.UNIMPLEMENTED,
  INTERNAL: GrpcStatus.INTERNAL,
};

/** `5` → `"NOT_FOUND"`: the name grpcurl and the HTTP layer print. */
export function grpcCodeName(code: number): string {
  return GrpcStatus[code] ?? `CODE_${code}`;
}

/** The gRPC code of a bertforge error code. */
export function grpcCodeOf(code: ErrorCode): GrpcStatus {
  return CODE_TO_GRPC[code];
}

/** An error that came over the wire: the peer's status, kept exactly (code, message, trailers). */
export interface RemoteStatus {
  /** The numeric gRPC code as received. */
  grpcCode: number;
  /** Trailing metadata of the failed call, when there was one. */
  metadata?: unknown;
}

/** True for the error grpc-js raises for a failed call (a status code and details). */
export function isServiceError(
  error: unknown,
): error is Error & { code: number; details: string; metadata?: unknown } {
  return error instanceof Error && typeof (error as { code?: unknown }).code === "number" &&
    typeof (error as { details?: unknown }).details === "string";
}

export interface StatusObject {
  code: GrpcStatus;
  details: string;
  /** False for errors the caller could not have caused and that the service must log (INTERNAL). */
  expected: boolean;
}

/**
 * The status a thrown value becomes. A BertforgeError keeps its code and message; a status received from
 * a peer is passed on as is; anything else is INTERNAL with a generic message (the real one goes to the log,
 * never to the caller, who cannot act on it).
 */
export function toStatus(error: unknown): StatusObject {
  if (error instanceof BertforgeError) {
    const remote = (error as BertforgeError & Partial<RemoteStatus>).grpcCode;
    return {
      code: typeof remote === "number" ? remote : CODE_TO_GRPC[error.code],
      details: error.message,
      expected: error.code !== "INTERNAL",
    };
  }
  if (isServiceError(error)) {
    return { code: error.code, details: error.details, expected: error.code !== GrpcStatus.INTERNAL };
  }
  return { code: GrpcStatus.INTERNAL, details: "internal error (logged by the service)", expected: false };
}

/**
 * The typed error for a status received by a client: `NotFound` for NOT_FOUND and so on, with the server's
 * message as its message and the exact numeric code in `grpcCode` (codes bertforge has no class for, such as
 * PERMISSION_DENIED, become a BertforgeError with code INTERNAL but keep their `grpcCode`).
 */
export function errorFromStatus(
  code: number,
  details: string,
  metadata?: unknown,
  cause?: unknown,
): BertforgeError & RemoteStatus {
  const message = details || grpcCodeName(code);
  const options = cause === undefined ? undefined : { cause };
  let error: BertforgeError;
  switch (code) {
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.OUT_OF_RANGE:
      error = new InvalidArgument(message, options);
      break;
    case GrpcStatus.NOT_FOUND:
      error = new NotFound(message, options);
      break;
    case GrpcStatus.ALREADY_EXISTS:
      error = new AlreadyExists(message, options);
      break;
    case GrpcStatus.FAILED_PRECONDITION:
      error = new FailedPrecondition(message, options);
      break;
    case GrpcStatus.RESOURCE_EXHAUSTED:
      error = new ResourceExhausted(message, options);
      break;
    case GrpcStatus.UNAVAILABLE:
      error = new Unavailable(message, options);
      break;
    case GrpcStatus.CANCELLED:
      error = new Cancelled(message, options);
      break;
    case GrpcStatus.UNAUTHENTICATED:
      error = new Unauthenticated(message, options);
      break;
    case GrpcStatus.UNIMPLEMENTED:
      error = new Unimplemented(message, options);
      break;
    case GrpcStatus.DEADLINE_EXCEEDED:
      error = new BertforgeError("DEADLINE_EXCEEDED", message, options);
      break;
    default:
      error = new BertforgeError("INTERNAL", message, options);
  }
  return Object.assign(error, { grpcCode: code, ...(metadata === undefined ? {} : { metadata }) });
}

/** Converts whatever a grpc-js client call rejected with into a typed error (others pass through). */
export function fromClientError(error: unknown): unknown {
  if (error instanceof BertforgeError) return error;
  if (isServiceError(error)) return errorFromStatus(error.code, error.details, error.metadata, error);
  return error;
}

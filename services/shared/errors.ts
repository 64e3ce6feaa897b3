/**
 * Domain errors, one class per gRPC status a caller can act on. Services throw these; the rpc layer maps
 * them to gRPC status codes once (rpc/errors.ts), the HTTP layer to status codes once.
 */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "CANCELLED"
  | "UNAUTHENTICATED"
  | "DEADLINE_EXCEEDED"
  | "UNIMPLEMENTED"
  | "INTERNAL";

export class BertforgeError extends Error {
  constructor(readonly code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class InvalidArgument extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("INVALID_ARGUMENT", message, options);
  }
}
export class NotFound extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("NOT_FOUND", message, options);
  }
}
export class AlreadyExists extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("ALREADY_EXISTS", message, options);
  }
}
export class FailedPrecondition extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("FAILED_PRECONDITION", message, options);
  }
}
export class ResourceExhausted extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("RESOURCE_EXHAUSTED", message, options);
  }
}
export class Unavailable extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("UNAVAILABLE", message, options);
  }
}
export class Cancelled extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("CANCELLED", message, options);
  }
}
export class Unauthenticated extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("UNAUTHENTICATED", message, options);
  }
}
export class Unimplemented extends BertforgeError {
  constructor(message: string, options?: ErrorOptions) {
    super("UNIMPLEMENTED", message, options);
  }
}

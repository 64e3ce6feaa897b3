/** Subset of jsr:@std/assert (see README.md): same names, same semantics, messages showing both values. */
import { inspect, isDeepStrictEqual } from "node:util";

export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

const show = (v: unknown) => inspect(v, { depth: 6, maxArrayLength: 50, breakLength: 120 });
const suffix = (msg?: string) => (msg ? `: ${msg}` : "");

export function fail(msg?: string): never {
  throw new AssertionError(`Failed assertion${suffix(msg)}`);
}
export function unreachable(msg?: string): never {
  throw new AssertionError(msg ?? "unreachable");
}
export function assert(expr: unknown, msg = ""): asserts expr {
  if (!expr) throw new AssertionError(msg || "Expected actual to be truthy");
}
export function assertFalse(expr: unknown, msg = ""): void {
  if (expr) throw new AssertionError(msg || "Expected actual to be falsy");
}
export function equal(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b);
}
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new AssertionError(
      `Values are not equal${suffix(msg)}\n  actual:   ${show(actual)}\n  expected: ${show(expected)}`,
    );
  }
}
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  if (isDeepStrictEqual(actual, expected)) {
    throw new AssertionError(`Expected actual to differ from ${show(expected)}${suffix(msg)}`);
  }
}
export function assertStrictEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  if (!Object.is(actual, expected)) {
    throw new AssertionError(
      `Values are not strictly equal${suffix(msg)}\n  actual:   ${show(actual)}\n  expected: ${
        show(expected)
      }`,
    );
  }
}
export function assertNotStrictEquals<T>(actual: T, expected: T, msg?: string): void {
  if (Object.is(actual, expected)) {
    throw new AssertionError(`Expected actual to not be ${show(expected)}${suffix(msg)}`);
  }
}
export function assertExists<T>(actual: T, msg?: string): asserts actual is NonNullable<T> {
  if (actual === undefined || actual === null) {
    throw new AssertionError(`Expected actual to not be null or undefined${suffix(msg)}`);
  }
}
export function assertAlmostEquals(actual: number, expected: number, tolerance?: number, msg?: string): void {
  const tol = tolerance ?? Math.abs(expected) * 1e-7;
  if (Object.is(actual, expected)) return;
  const delta = Math.abs(expected - actual);
  if (!(delta <= tol)) {
    throw new AssertionError(
      `Expected actual "${actual}" to be close to "${expected}": delta "${delta}" is greater than "${tol}"${
        suffix(msg)
      }`,
    );
  }
}
function compare(op: string, ok: boolean, actual: unknown, expected: unknown, msg?: string) {
  if (!ok) throw new AssertionError(`Expect ${show(actual)} ${op} ${show(expected)}${suffix(msg)}`);
}
export function assertGreater<T>(actual: T, expected: T, msg?: string): void {
  compare(">", actual > expected, actual, expected, msg);
}
export function assertGreaterOrEqual<T>(actual: T, expected: T, msg?: string): void {
  compare(">=", actual >= expected, actual, expected, msg);
}
export function assertLess<T>(actual: T, expected: T, msg?: string): void {
  compare("<", actual < expected, actual, expected, msg);
}
export function assertLessOrEqual<T>(actual: T, expected: T, msg?: string): void {
  compare("<=", actual <= expected, actual, expected, msg);
}
export function assertMatch(actual: string, expected: RegExp, msg?: string): void {
  if (!expected.test(actual)) {
    throw new AssertionError(`Expected actual: "${actual}" to match: "${expected}"${suffix(msg)}`);
  }
}
export function assertNotMatch(actual: string, expected: RegExp, msg?: string): void {
  if (expected.test(actual)) {
    throw new AssertionError(`Expected actual: "${actual}" to not match: "${expected}"${suffix(msg)}`);
  }
}
export function assertStringIncludes(actual: string, expected: string, msg?: string): void {
  if (!actual.includes(expected)) {
    throw new AssertionError(`Expected actual: "${actual}" to contain: "${expected}"${suffix(msg)}`);
  }
}
export function assertArrayIncludes<T>(actual: ArrayLike<T>, expected: ArrayLike<T>, msg?: string): void {
  const missing = Array.from(expected).filter((e) =>
    !Array.from(actual).some((a) => isDeepStrictEqual(a, e))
  );
  if (missing.length) {
    throw new AssertionError(`Expected ${show(actual)} to include ${show(missing)}${suffix(msg)}`);
  }
}
export function assertInstanceOf<T extends abstract new (...args: never[]) => unknown>(
  actual: unknown,
  expectedType: T,
  msg?: string,
): asserts actual is InstanceType<T> {
  if (!(actual instanceof expectedType)) {
    throw new AssertionError(
      `Expected object to be an instance of "${expectedType.name}"${suffix(msg)}: got ${show(actual)}`,
    );
  }
}
export function assertObjectMatch(
  actual: Record<PropertyKey, unknown>,
  expected: Record<PropertyKey, unknown>,
  msg?: string,
): void {
  const pick = (a: unknown, e: unknown): unknown => {
    if (e && typeof e === "object" && !Array.isArray(e) && a && typeof a === "object") {
      return Object.fromEntries(
        Object.keys(e).map((
          k,
        ) => [k, pick((a as Record<string, unknown>)[k], (e as Record<string, unknown>)[k])]),
      );
    }
    return a;
  };
  assertEquals(pick(actual, expected), expected, msg);
}

type ErrorClass<E extends Error> = abstract new (...args: never[]) => E;
function checkError<E extends Error>(
  error: unknown,
  ErrorClass?: ErrorClass<E>,
  msgIncludes?: string,
  msg?: string,
): E {
  if (ErrorClass && !(error instanceof ErrorClass)) {
    throw new AssertionError(
      `Expected error to be instance of "${ErrorClass.name}", but was ${show(error)}${suffix(msg)}`,
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  if (msgIncludes !== undefined && !message.includes(msgIncludes)) {
    throw new AssertionError(
      `Expected error message to include "${msgIncludes}", but got "${message}"${suffix(msg)}`,
    );
  }
  return error as E;
}
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  ErrorClassOrMsg?: ErrorClass<E> | string,
  msgIncludes?: string,
  msg?: string,
): E {
  try {
    fn();
  } catch (error) {
    if (typeof ErrorClassOrMsg === "string") {
      return checkError<E>(error, undefined, undefined, ErrorClassOrMsg);
    }
    return checkError(error, ErrorClassOrMsg, msgIncludes, msg);
  }
  throw new AssertionError(
    `Expected function to throw${suffix(typeof ErrorClassOrMsg === "string" ? ErrorClassOrMsg : msg)}`,
  );
}
export async function assertRejects<E extends Error = Error>(
  fn: () => PromiseLike<unknown>,
  ErrorClassOrMsg?: ErrorClass<E> | string,
  msgIncludes?: string,
  msg?: string,
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    if (typeof ErrorClassOrMsg === "string") {
      return checkError<E>(error, undefined, undefined, ErrorClassOrMsg);
    }
    return checkError(error, ErrorClassOrMsg, msgIncludes, msg);
  }
  throw new AssertionError(
    `Expected function to reject${suffix(typeof ErrorClassOrMsg === "string" ? ErrorClassOrMsg : msg)}`,
  );
}

/** Subset of jsr:@std/encoding (see README.md). */
import { Buffer } from "node:buffer";

const bytes = (data: string | Uint8Array | ArrayBuffer) =>
  typeof data === "string"
    ? new TextEncoder().encode(data)
    : data instanceof Uint8Array
    ? data
    : new Uint8Array(data);

export function encodeHex(data: string | Uint8Array | ArrayBuffer): string {
  return Buffer.from(bytes(data)).toString("hex");
}
export function decodeHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) {
    throw new TypeError(`Cannot decode hex: invalid input '${hex.slice(0, 16)}'`);
  }
  return new Uint8Array(Buffer.from(hex, "hex"));
}
export function encodeBase64(data: string | Uint8Array | ArrayBuffer): string {
  return Buffer.from(bytes(data)).toString("base64");
}
export function decodeBase64(b64: string): Uint8Array {
  return new Uint8Array(Buffer.from(b64, "base64"));
}

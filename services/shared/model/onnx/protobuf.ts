/**
 * The few protobuf wire-format pieces the ONNX writer needs (https://protobuf.dev/programming-guides/encoding/):
 * varints, length-delimited fields and fixed32 floats. A message is kept as a list of byte chunks with their
 * total length, so a large initializer's raw bytes are never copied into one buffer: the file is written chunk
 * by chunk.
 */

const WIRE_VARINT = 0, WIRE_FIXED32 = 5, WIRE_LENGTH_DELIMITED = 2;
const encoder = new TextEncoder();

function varint(value: number | bigint): Uint8Array {
  let v = BigInt.asUintN(64, BigInt(value)); // negative int64 values are written as 10-byte two's complement
  const bytes: number[] = [];
  while (v >= 0x80n) {
    bytes.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  bytes.push(Number(v));
  return Uint8Array.from(bytes);
}

function tag(field: number, wire: number): Uint8Array {
  return varint((field << 3) | wire);
}

export class Message {
  readonly parts: Uint8Array[] = [];
  length = 0;

  private push(bytes: Uint8Array): this {
    this.parts.push(bytes);
    this.length += bytes.length;
    return this;
  }

  int(field: number, value: number | bigint): this {
    return this.push(tag(field, WIRE_VARINT)).push(varint(value));
  }

  float(field: number, value: number): this {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    return this.push(tag(field, WIRE_FIXED32)).push(bytes);
  }

  bytes(field: number, value: Uint8Array): this {
    return this.push(tag(field, WIRE_LENGTH_DELIMITED)).push(varint(value.length)).push(value);
  }

  string(field: number, value: string): this {
    return this.bytes(field, encoder.encode(value));
  }

  message(field: number, value: Message): this {
    this.push(tag(field, WIRE_LENGTH_DELIMITED)).push(varint(value.length));
    for (const part of value.parts) this.push(part);
    return this;
  }

  /** Packed repeated int64 (proto3 default for repeated scalars). */
  packedInts(field: number, values: ArrayLike<number>): this {
    const body = new Message();
    for (let i = 0; i < values.length; i++) body.push(varint(values[i]!));
    return this.message(field, body);
  }

  /** Concatenated bytes: for small messages and tests. */
  toBytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const part of this.parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }
}

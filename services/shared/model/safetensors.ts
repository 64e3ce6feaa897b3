/**
 * Our own small safetensors reader and writer (https://huggingface.co/docs/safetensors):
 *
 *   [8 bytes: header length N, u64 little-endian][N bytes: JSON header][data]
 *
 * The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the start of
 * the data) plus an optional `__metadata__` object of string → string. Tensors are little-endian, row-major.
 *
 * Both directions stream: `writeSafetensors` writes tensor by tensor (the header only needs shapes, so the data
 * may come from callbacks), and `openSafetensors` reads the header first and each tensor on demand by offset,
 * so a bert-base file (~400 MB) is never held in one buffer. F32 is written; F32, F16 and BF16 are read (the
 * halves converted to F32, which is what every engine computes in).
 */
import { InvalidArgument } from "../errors.ts";
import type { NamedTensor, Weights } from "../engine/engine.ts";

/** dtype names of the safetensors format this reader understands, with their byte widths. */
const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };
/** A header larger than this is a corrupt length field, not a real header (safetensors itself caps at 100 MB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  dtype: string;
  shape: number[];
  /** Byte offsets relative to the start of the data section, [begin, end). */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
  /** Absolute file offset where the data section starts (8 + header length). */
  dataStart: number;
}

/** A tensor to write: the data may be produced lazily so a writer never needs every tensor in memory at once. */
export interface TensorSource {
  name: string;
  shape: number[];
  data: Float32Array | (() => Float32Array | Promise<Float32Array>);
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Parses and validates a header: `headerBytes` is the JSON, `dataBytes` the size of the data section when known
 * (from the file size), used to reject offsets past the end of the file.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  dataBytes: number | undefined,
  source = "safetensors",
): Omit<SafetensorsHeader, "dataStart"> {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new InvalidArgument(`${source}: header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new InvalidArgument(`${source}: header must be a JSON object`);
  }
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        throw new InvalidArgument(`${source}: __metadata__ must be an object of strings`);
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") {
          throw new InvalidArgument(
            `${source}: __metadata__.${k} must be a string: current value is ${JSON.stringify(v)}`,
          );
        }
        metadata[k] = v;
      }
      continue;
    }
    const entry = value as Record<string, unknown> | null;
    if (entry === null || typeof entry !== "object") {
      throw new InvalidArgument(
        `${source}: tensor '${name}' must be an object with dtype, shape, data_offsets`,
      );
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new InvalidArgument(
        `${source}: tensor '${name}' has dtype ${JSON.stringify(dtype)}: supported are ${
          Object.keys(DTYPE_BYTES).join(", ")
        }`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new InvalidArgument(
        `${source}: tensor '${name}' shape must be a list of non-negative integers: ${JSON.stringify(shape)}`,
      );
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) =>
        Number.isInteger(o) && o >= 0
      ) ||
      offsets[1] < offsets[0]
    ) {
      throw new InvalidArgument(
        `${source}: tensor '${name}' data_offsets must be [begin, end] with begin <= end: ${
          JSON.stringify(offsets)
        }`,
      );
    }
    const expectedBytes = elementCount(shape) * DTYPE_BYTES[dtype]!;
    if (offsets[1] - offsets[0] !== expectedBytes) {
      throw new InvalidArgument(
        `${source}: tensor '${name}' data_offsets ${JSON.stringify(offsets)} span ${
          offsets[1] - offsets[0]
        } bytes ` +
          `but ${dtype} ${JSON.stringify(shape)} needs ${expectedBytes}`,
      );
    }
    if (dataBytes !== undefined && offsets[1] > dataBytes) {
      throw new InvalidArgument(
        `${source}: tensor '${name}' ends at byte ${
          offsets[1]
        } of the data but the file holds only ${dataBytes} (truncated file?)`,
      );
    }
    tensors.set(name, { dtype, shape: shape as number[], dataOffsets: [offsets[0], offsets[1]] });
  }
  return { metadata, tensors };
}

/** Converts little-endian raw bytes of one dtype to F32. `bytes` must start at an aligned offset for F32. */
function toFloat32(bytes: Uint8Array, dtype: string): Float32Array {
  if (!littleEndian) throw new InvalidArgument("safetensors: big-endian hosts are not supported");
  if (dtype === "F32") return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const out = new Float32Array(halves.length);
  if (dtype === "BF16") {
    // bfloat16 is the top half of an IEEE float32: shift it back into place.
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < halves.length; i++) bits[i] = halves[i]! << 16;
    return out;
  }
  for (let i = 0; i < halves.length; i++) out[i] = halfToFloat(halves[i]!);
  return out;
}

/** IEEE 754 binary16 → number, subnormals, infinities and NaN included. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** Reads exactly `into.length` bytes at `position`, or throws naming the shortfall. */
async function readExactly(
  file: Deno.FsFile,
  position: number,
  into: Uint8Array,
  what: string,
): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let filled = 0;
  while (filled < into.length) {
    const n = await file.read(into.subarray(filled));
    if (n === null) {
      throw new InvalidArgument(
        `${what}: file ends after ${filled} of ${into.length} bytes (truncated file?)`,
      );
    }
    filled += n;
  }
}

/** An open safetensors file: header parsed, tensors read one at a time on demand. Close it (or `using`). */
export class SafetensorsReader {
  private constructor(
    private readonly file: Deno.FsFile,
    readonly path: string,
    readonly header: SafetensorsHeader,
  ) {}

  static async open(path: string): Promise<SafetensorsReader> {
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      if (size < 8) {
        throw new InvalidArgument(
          `${path}: ${size} bytes is too short for a safetensors file (needs 8 + header)`,
        );
      }
      const lengthBytes = new Uint8Array(8);
      await readExactly(file, 0, lengthBytes, path);
      const headerLength = Number(new DataView(lengthBytes.buffer).getBigUint64(0, true));
      if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > size) {
        throw new InvalidArgument(
          `${path}: header length field says ${headerLength} bytes but the file holds ${size} (not a safetensors file?)`,
        );
      }
      const headerBytes = new Uint8Array(headerLength);
      await readExactly(file, 8, headerBytes, path);
      const parsed = parseSafetensorsHeader(headerBytes, size - 8 - headerLength, path);
      return new SafetensorsReader(file, path, { ...parsed, dataStart: 8 + headerLength });
    } catch (e) {
      file.close();
      throw e;
    }
  }

  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  info(name: string): TensorInfo | undefined {
    return this.header.tensors.get(name);
  }

  /** One tensor as F32, read from disk now. */
  async read(name: string): Promise<NamedTensor> {
    const info = this.header.tensors.get(name);
    if (!info) throw new InvalidArgument(`${this.path}: no tensor named '${name}'`);
    const bytes = new Uint8Array(info.dataOffsets[1] - info.dataOffsets[0]);
    await readExactly(
      this.file,
      this.header.dataStart + info.dataOffsets[0],
      bytes,
      `${this.path} tensor '${name}'`,
    );
    return { shape: [...info.shape], data: toFloat32(bytes, info.dtype) };
  }

  /** Every tensor (or those `filter` keeps), one read each. */
  async readAll(filter?: (name: string) => boolean): Promise<Weights> {
    const out: Weights = new Map();
    for (const name of this.names()) {
      if (!filter || filter(name)) out.set(name, await this.read(name));
    }
    return out;
  }

  close(): void {
    this.file.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export function openSafetensors(path: string): Promise<SafetensorsReader> {
  return SafetensorsReader.open(path);
}

/** Reads a whole safetensors file into a Weights map (one tensor at a time; the file is never whole in memory). */
export async function readSafetensors(
  path: string,
): Promise<{ weights: Weights; metadata: Record<string, string> }> {
  const reader = await openSafetensors(path);
  try {
    return { weights: await reader.readAll(), metadata: reader.metadata };
  } finally {
    reader.close();
  }
}

/** Builds the header bytes (JSON padded with spaces to a multiple of 8, so the data starts 8-byte aligned). */
function buildHeader(
  sources: Array<{ name: string; shape: number[] }>,
  metadata: Record<string, string> | undefined,
): { header: Uint8Array; offsets: Array<[number, number]> } {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const offsets: Array<[number, number]> = [];
  let offset = 0;
  const seen = new Set<string>();
  for (const { name, shape } of sources) {
    if (seen.has(name)) throw new InvalidArgument(`safetensors: tensor '${name}' is given twice`);
    if (name === "__metadata__") {
      throw new InvalidArgument("safetensors: '__metadata__' is reserved and cannot name a tensor");
    }
    seen.add(name);
    const bytes = elementCount(shape) * 4;
    offsets.push([offset, offset + bytes]);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const encoder = new TextEncoder();
  const pad = (8 - (encoder.encode(json).length % 8)) % 8;
  json += " ".repeat(pad);
  const jsonBytes = encoder.encode(json);
  const out = new Uint8Array(8 + jsonBytes.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(jsonBytes.length), true);
  out.set(jsonBytes, 8);
  return { header: out, offsets };
}

function normaliseSources(tensors: Weights | Iterable<TensorSource>): TensorSource[] {
  if (tensors instanceof Map) {
    return [...tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data }));
  }
  return [...tensors];
}

/**
 * Writes F32 tensors as safetensors to `path`, one tensor at a time (lazy `data` callbacks are called in order
 * and their result released before the next). Shapes must be known up front because the header comes first.
 */
export async function writeSafetensors(
  path: string,
  tensors: Weights | Iterable<TensorSource>,
  metadata?: Record<string, string>,
): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await writeChunks(tensors, metadata, async (chunk) => {
      for (let written = 0; written < chunk.length;) written += await file.write(chunk.subarray(written));
    });
    await file.sync();
  } finally {
    file.close();
  }
}

/** The same as writeSafetensors into any byte stream (an upload, a pipe). Closes the stream unless told not to. */
export async function writeSafetensorsTo(
  stream: WritableStream<Uint8Array>,
  tensors: Weights | Iterable<TensorSource>,
  metadata?: Record<string, string>,
  closeStream = true,
): Promise<void> {
  const writer = stream.getWriter();
  try {
    // Copy each chunk so the stream owns it (the caller may reuse or transfer the source buffer).
    await writeChunks(tensors, metadata, (chunk) => writer.write(chunk.slice()));
    if (closeStream) await writer.close();
  } finally {
    writer.releaseLock();
  }
}

/** Header, then each tensor's bytes in header order, handed to `sink` one at a time. */
async function writeChunks(
  tensors: Weights | Iterable<TensorSource>,
  metadata: Record<string, string> | undefined,
  sink: (chunk: Uint8Array) => Promise<void>,
): Promise<void> {
  if (!littleEndian) throw new InvalidArgument("safetensors: big-endian hosts are not supported");
  const sources = normaliseSources(tensors);
  const { header } = buildHeader(sources, metadata);
  await sink(header);
  for (const source of sources) {
    const data = typeof source.data === "function" ? await source.data() : source.data;
    const expected = elementCount(source.shape);
    if (data.length !== expected) {
      throw new InvalidArgument(
        `safetensors: tensor '${source.name}' has ${data.length} values but shape ${
          JSON.stringify(source.shape)
        } needs ${expected}`,
      );
    }
    await sink(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
}

/** In-memory encoding, for small models and tests. */
export function encodeSafetensors(tensors: Weights, metadata?: Record<string, string>): Uint8Array {
  const sources = normaliseSources(tensors);
  const { header, offsets } = buildHeader(sources, metadata);
  const total = header.length + (offsets.length ? offsets[offsets.length - 1]![1] : 0);
  const out = new Uint8Array(total);
  out.set(header, 0);
  sources.forEach((s, i) => {
    const data = s.data as Float32Array;
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), header.length + offsets[i]![0]);
  });
  return out;
}

/** In-memory decoding, for small models and tests. */
export function decodeSafetensors(bytes: Uint8Array): { weights: Weights; metadata: Record<string, string> } {
  if (bytes.length < 8) {
    throw new InvalidArgument(`safetensors: ${bytes.length} bytes is too short (needs 8 + header)`);
  }
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > bytes.length) {
    throw new InvalidArgument(
      `safetensors: header length field says ${headerLength} bytes but only ${bytes.length} are present`,
    );
  }
  const dataStart = 8 + headerLength;
  const { metadata, tensors } = parseSafetensorsHeader(
    bytes.subarray(8, dataStart),
    bytes.length - dataStart,
  );
  const weights: Weights = new Map();
  for (const [name, info] of tensors) {
    // slice() copies into a fresh, aligned buffer.
    const raw = bytes.slice(dataStart + info.dataOffsets[0], dataStart + info.dataOffsets[1]);
    weights.set(name, { shape: [...info.shape], data: toFloat32(raw, info.dtype) });
  }
  return { weights, metadata };
}

import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { InvalidArgument } from "../errors.ts";
import type { Weights } from "../engine/engine.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  halfToFloat,
  openSafetensors,
  readSafetensors,
  writeSafetensors,
} from "./safetensors.ts";

function sample(): Weights {
  return new Map([
    ["a.weight", { shape: [3, 5], data: Float32Array.from({ length: 15 }, (_, i) => i * 0.5 - 3) }],
    ["b.bias", { shape: [7], data: Float32Array.from({ length: 7 }, (_, i) => 1 - i) }],
    ["scalar", { shape: [], data: new Float32Array([42]) }],
  ]);
}

/** A file by hand: header JSON + raw bytes, to test what other writers produce. */
function rawFile(header: unknown, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("writeSafetensors() then openSafetensors() round-trips tensors and metadata, reading lazily", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "m.safetensors");
  await writeSafetensors(path, sample(), { format: "pt" });
  const bytes = await Deno.readFile(path);
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assertEquals((8 + headerLength) % 8, 0, "data section starts 8-byte aligned");
  const reader = await openSafetensors(path);
  try {
    assertEquals(reader.metadata, { format: "pt" });
    assertEquals(reader.names().sort(), ["a.weight", "b.bias", "scalar"]);
    const b = await reader.read("b.bias");
    assertEquals(b.shape, [7]);
    assertEquals([...b.data], [1, 0, -1, -2, -3, -4, -5]);
    const a = await reader.read("a.weight");
    assertEquals([...a.data], [...sample().get("a.weight")!.data]);
    await assertRejects(() => reader.read("nope"), InvalidArgument, "nope");
  } finally {
    reader.close();
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("writeSafetensors() takes lazy tensor sources in order", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "lazy.safetensors");
  const calls: string[] = [];
  await writeSafetensors(path, [
    { name: "x", shape: [2], data: () => (calls.push("x"), new Float32Array([1, 2])) },
    {
      name: "y",
      shape: [1],
      data: async () => (calls.push("y"), await Promise.resolve(new Float32Array([3]))),
    },
  ]);
  assertEquals(calls, ["x", "y"]);
  const { weights } = await readSafetensors(path);
  assertEquals([...weights.get("y")!.data], [3]);
  await assertRejects(
    () => writeSafetensors(path, [{ name: "z", shape: [3], data: new Float32Array(2) }]),
    InvalidArgument,
    "'z' has 2 values",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("encode/decodeSafetensors() agree with the file functions", () => {
  const { weights, metadata } = decodeSafetensors(encodeSafetensors(sample(), { k: "v" }));
  assertEquals(metadata, { k: "v" });
  for (const [name, t] of sample()) {
    assertEquals(weights.get(name)!.shape, t.shape);
    assertEquals([...weights.get(name)!.data], [...t.data]);
  }
});

Deno.test("decodeSafetensors() converts F16 and BF16 to F32", () => {
  // 1.0, -2.0, 0.5 in F16; 1.0, -2.0 in BF16 (top halves of the F32 bits).
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x3800]);
  const bf16 = new Uint16Array([0x3f80, 0xc000]);
  const data = new Uint8Array(10);
  data.set(new Uint8Array(f16.buffer), 0);
  data.set(new Uint8Array(bf16.buffer), 6);
  const file = rawFile({
    h: { dtype: "F16", shape: [3], data_offsets: [0, 6] },
    b: { dtype: "BF16", shape: [2], data_offsets: [6, 10] },
  }, data);
  const { weights } = decodeSafetensors(file);
  assertEquals([...weights.get("h")!.data], [1, -2, 0.5]);
  assertEquals([...weights.get("b")!.data], [1, -2]);
  assertEquals(halfToFloat(0x7c00), Infinity);
  assert(Number.isNaN(halfToFloat(0x7e00)));
  assertEquals(halfToFloat(0x0001), 2 ** -24);
});

Deno.test("corrupt headers are InvalidArgument naming the problem", async () => {
  const ok = { t: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  assertThrows(() => decodeSafetensors(new Uint8Array(4)), InvalidArgument, "too short");
  const hugeLength = new Uint8Array(16);
  new DataView(hugeLength.buffer).setBigUint64(0, 1n << 40n, true);
  assertThrows(() => decodeSafetensors(hugeLength), InvalidArgument, "header length");
  const notJson = rawFile(ok, new Uint8Array(8));
  notJson[8] = 0x7b + 1; // break the opening brace
  assertThrows(() => decodeSafetensors(notJson), InvalidArgument, "not valid UTF-8 JSON");
  assertThrows(
    () =>
      decodeSafetensors(
        rawFile({ t: { dtype: "I64", shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)),
      ),
    InvalidArgument,
    'dtype "I64"',
  );
  assertThrows(
    () =>
      decodeSafetensors(
        rawFile({ t: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      ),
    InvalidArgument,
    "needs 12",
  );
  assertThrows(() => decodeSafetensors(rawFile(ok, new Uint8Array(4))), InvalidArgument, "truncated");
  // The file reader reports the same problems with the path.
  const dir = await Deno.makeTempDir();
  const path = join(dir, "bad.safetensors");
  await Deno.writeFile(path, rawFile(ok, new Uint8Array(4)));
  await assertRejects(() => openSafetensors(path), InvalidArgument, path);
  await Deno.remove(dir, { recursive: true });
});

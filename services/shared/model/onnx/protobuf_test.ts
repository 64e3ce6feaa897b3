import { assertEquals } from "@std/assert";
import { Message } from "./protobuf.ts";

Deno.test("Message writes protobuf wire format: varints, negative int64, strings, nested, packed, float", () => {
  // Field 1 varint 150 is the protobuf documentation's example: 08 96 01.
  assertEquals([...new Message().int(1, 150).toBytes()], [0x08, 0x96, 0x01]);
  // Negative int64 is ten bytes of two's complement.
  assertEquals([...new Message().int(1, -1).toBytes()], [
    0x08,
    255,
    255,
    255,
    255,
    255,
    255,
    255,
    255,
    255,
    1,
  ]);
  assertEquals([...new Message().string(2, "testing").toBytes()], [
    0x12,
    7,
    ...new TextEncoder().encode("testing"),
  ]);
  const inner = new Message().int(1, 150);
  assertEquals([...new Message().message(3, inner).toBytes()], [0x1a, 3, 0x08, 0x96, 0x01]);
  assertEquals([...new Message().packedInts(4, [3, 270]).toBytes()], [0x22, 3, 3, 0x8e, 0x02]);
  assertEquals([...new Message().float(2, 1).toBytes()], [0x15, 0, 0, 0x80, 0x3f]);
});

import assert from "node:assert/strict";
import { hashFile, Sha256, sha256 } from "./hash.ts";

Deno.test("sha256 matches the FIPS 180-2 test vectors for bytes, text and streams", async () => {
  const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  assert.equal(await sha256("abc"), abc);
  assert.equal(await sha256(new TextEncoder().encode("abc")), abc);
  assert.equal(await sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const pieces = ReadableStream.from([new Uint8Array([0x61]), new Uint8Array([0x62, 0x63])]);
  assert.equal(await sha256(pieces), abc);
  const incremental = new Sha256().update("a").update("bc");
  assert.equal(incremental.bytes, 3);
  assert.equal(incremental.hex(), abc);
});

Deno.test("hashFile streams a file and reports its size", async () => {
  const path = await Deno.makeTempFile();
  try {
    const bytes = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => i * 31);
    await Deno.writeFile(path, bytes);
    assert.deepEqual(await hashFile(path), { sha256: await sha256(bytes), size: bytes.length });
    await assert.rejects(() => hashFile(path + ".missing"), Deno.errors.NotFound);
  } finally {
    await Deno.remove(path);
  }
});

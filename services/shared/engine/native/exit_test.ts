/**
 * A process that trained with the C kernels must exit cleanly. Deno unloads FFI libraries at exit while
 * libgomp's idle worker threads still run in their code; without `-z nodelete` on the kernel library about one
 * exit in four ended in SIGSEGV (exit 139) after all output was written (reproduced with a 15-step bert-mini
 * NER fine-tune, core dump: the crashing thread's pc in the unmapped kernel library). The crash depends on
 * timing, so the test checks the cause: the library's NODELETE flag, which keeps it and libgomp mapped.
 */
import { assert } from "@std/assert";
import { kernelLibraryPath, loadCKernels } from "./kernels.ts";

const hasKernels = loadCKernels() !== null;
const readelf = await new Deno.Command("readelf", { args: ["--version"] }).output().then(
  (o) => o.success,
  () => false,
);

Deno.test({
  name: "the C kernel library is built NODELETE, so exit does not unload it under libgomp's threads",
  ignore: !hasKernels || !readelf || Deno.build.os !== "linux",
  fn: async () => {
    const out = await new Deno.Command("readelf", { args: ["-d", kernelLibraryPath()] }).output();
    const dynamic = new TextDecoder().decode(out.stdout);
    assert(/FLAGS_1.*NODELETE/.test(dynamic), `kernels built without -Wl,-z,nodelete:\n${dynamic}`);
  },
});

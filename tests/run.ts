/**
 * `deno task test [PATTERN...]`: every `*_test.ts` of the project, each file in its own `deno test` process.
 *
 * Why not one `deno test` over everything: that runs every file in one process, and native addons
 * (onnxruntime-node, tokenizers, jieba) cannot be loaded again by a second file's isolate; the second load fails
 * and can take the whole run down. One process per file also means a crash names its file and the rest still
 * run. Files run one after another: several are CPU-bound and CI has two cores.
 */
import { relative } from "@std/path";
import { walk } from "@std/fs";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const SKIP = [/node_modules/, /\/\.tools\//, /\/build\//, /\/\.bertforge\//, /\/\.git\//];

const patterns = Deno.args.filter((a) => !a.startsWith("-"));
const files: string[] = [];
for await (const entry of walk(ROOT, { includeDirs: false, exts: ["_test.ts"], skip: SKIP })) {
  const rel = relative(ROOT, entry.path);
  if (patterns.length === 0 || patterns.some((p) => rel.includes(p))) files.push(rel);
}
files.sort();

const results: { file: string; ok: boolean; seconds: number }[] = [];
const started = performance.now();
/**
 * Deno 2.9's node:http2 can abort a process on an HTTP/2 GOAWAY that races a stream (an nghttp2 assertion,
 * denoland/deno#36788); tests that SIGKILL a gRPC server mid-call can meet it. Such a file is run once more,
 * and says so; any other failure counts at once.
 */
const KNOWN_RUNTIME_ABORT = "nghttp2_session.c";

async function runFile(file: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check=remote", file],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const forward = async (stream: ReadableStream<Uint8Array>, sink: typeof Deno.stdout) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      output += decoder.decode(chunk, { stream: true });
      await sink.write(chunk);
    }
  };
  await Promise.all([forward(child.stdout, Deno.stdout), forward(child.stderr, Deno.stderr)]);
  return { code: (await child.status).code, output };
}

for (const file of files) {
  const t0 = performance.now();
  console.log(`\n=== ${file}`);
  let { code, output } = await runFile(file);
  if (code !== 0 && output.includes(KNOWN_RUNTIME_ABORT)) {
    console.log(`\n=== ${file}: the runtime aborted in nghttp2 (denoland/deno#36788); running it once more`);
    ({ code } = await runFile(file));
  }
  results.push({ file, ok: code === 0, seconds: (performance.now() - t0) / 1000 });
}

const failed = results.filter((r) => !r.ok);
console.log(`\n=== ${results.length} test files in ${((performance.now() - started) / 1000).toFixed(0)} s`);
for (const r of [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 8)) {
  console.log(`  ${r.seconds.toFixed(1).padStart(6)} s  ${r.file}`);
}
if (failed.length > 0) {
  console.log(`\nFAILED (${failed.length}):`);
  for (const r of failed) console.log(`  ${r.file}`);
  Deno.exit(1);
}
console.log("all test files passed");

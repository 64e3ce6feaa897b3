/**
 * `deno task bench <name> [flags]`: runs tests/bench/<name>.ts, whose `main(args)` prints compact JSON lines.
 * `deno task bench all` runs every benchmark with its default arguments, one after another, each in its own
 * process, so a bench's peak RSS is its own and not the sum of those before it.
 */
const BENCHES = ["tokenize", "train", "shards", "trainer_job", "finetune", "inference"];

async function run(name: string, args: string[]): Promise<void> {
  const url = new URL(`./${name}.ts`, import.meta.url);
  try {
    await Deno.stat(url);
  } catch {
    console.error(`bench '${name}' does not exist yet (no ${url.pathname})`);
    return;
  }
  const mod = await import(url.href);
  await mod.main(args);
}

if (import.meta.main) {
  const [name, ...args] = Deno.args;
  if (!name) {
    console.error(`usage: deno task bench <${BENCHES.join("|")}|all> [flags]`);
    Deno.exit(2);
  }
  if (name === "all") {
    for (const bench of BENCHES) {
      const { code } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL(import.meta.url).pathname, bench],
        stdout: "inherit",
        stderr: "inherit",
      }).output();
      if (code !== 0) console.error(`bench '${bench}' exited with code ${code}`);
    }
  } else {
    await run(name, args);
  }
}

/**
 * `deno task bench <name> [flags]`: runs tests/bench/<name>.ts, whose `main(args)` prints compact JSON lines.
 * `deno task bench all` runs every benchmark with its default arguments, one after another, each in its own
 * process, so a bench's peak RSS is its own and not the sum of those before it.
 */
const BENCHES = ["tokenize", "train", "shards", "trainer_job", "trainer_responsive", "finetune", "inference"];
/**
 * Run only by name, never by `all`: each takes far longer than a benchmark run should (`suite` fine-tunes a
 * model on six tasks: hours on 2 cores; `trainer_quality` pretrains first).
 */
const ON_DEMAND = ["suite", "trainer_quality"];

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
    console.error(`usage: deno task bench <${[...BENCHES, ...ON_DEMAND].join("|")}|all> [flags]`);
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

/**
 * `deno task bench suite --model M [--store DIR | --trainer-addr HOST:PORT] [--tasks a,b] [--max-train N]
 * [--data-dir DIR] [--out DIR]`: the evaluation suite of `bertctl eval-suite` (services/cli/suite.ts) as a
 * benchmark. It starts a trainer of its own on a free loopback port over the store folder (default
 * `.bertforge/store`, the embedded store `deno task fleet` uses; the folder must not be in use by a running
 * fleet, whose unfinished jobs a second trainer would take over), or uses a running trainer given by address.
 *
 * Prints one line per task:
 * `{"bench":"suite","impl":"bertforge","task":..,"metric":..,"value":..,"baseline":..,"majority":..}` (value,
 * baseline and majority are null for a task skipped or failed, with `status` and `reason`). Progress goes to
 * stderr. Not part of `bench all`: six fine-tunes of a real model take hours on 2 cores.
 */
import { parseArgs } from "@std/cli";
import { join } from "@std/path";
import { loadSettings } from "../../services/shared/config/mod.ts";
import { client } from "../../services/shared/rpc/mod.ts";
import { start } from "../../services/trainer/main.ts";
import { DEFAULT_DATA_DIR, runSuite, selectTasks, type SuiteRow } from "../../services/cli/suite.ts";

const USAGE =
  "usage: deno task bench suite --model MODEL[@VERSION] [--store DIR | --trainer-addr HOST:PORT] " +
  "[--tasks a,b] [--max-train N] [--data-dir DIR] [--out DIR]";

export function benchLine(row: SuiteRow): Record<string, unknown> {
  return {
    bench: "suite",
    impl: "bertforge",
    task: row.task,
    metric: row.metric,
    value: row.bertforge ?? null,
    baseline: row.baselines?.linear ?? null,
    majority: row.baselines?.majority ?? null,
    status: row.status,
    ...(row.reason ? { reason: row.reason } : {}),
    ...(row.model ? { model: row.model } : {}),
    train_examples: row.train_examples ?? null,
    eval_examples: row.eval_examples ?? null,
    seconds: row.seconds,
  };
}

export async function main(argv: string[]): Promise<void> {
  const args = parseArgs(argv, {
    string: ["model", "store", "trainer-addr", "tasks", "max-train", "data-dir", "out"],
    default: { store: ".bertforge/store" },
  });
  const fail = (message: string): never => {
    console.error(`bench suite: ${message}\n${USAGE}`);
    Deno.exit(2);
  };
  const ref = args.model || fail("--model is required");
  const [name = "", version = ""] = ref.split("@");
  if (!name) fail(`--model needs MODEL[@VERSION]: got "${ref}"`);
  let maxTrain: number | undefined;
  if (args["max-train"] !== undefined) {
    maxTrain = Number(args["max-train"]);
    if (!/^\d+$/.test(args["max-train"]) || maxTrain < 1) {
      fail(`--max-train must be an integer >= 1: got "${args["max-train"]}"`);
    }
  }
  let tasks;
  try {
    tasks = selectTasks(args.tasks);
  } catch (error) {
    fail((error as Error).message);
  }

  let address = args["trainer-addr"];
  const server = address ? undefined : await start(loadSettings("trainer", {
    args: ["--port", "0", "--store", args.store, "--log-level", "warn"],
  }));
  address ??= server!.address;
  const trainer = client("TrainerService", address);
  try {
    await runSuite({
      model: { name, version },
      tasks: tasks!,
      dataDir: args["data-dir"] ?? DEFAULT_DATA_DIR,
      outDir: args.out ?? join("report", "suite", ref.replace(/[^A-Za-z0-9._-]+/g, "-")),
      ...(maxTrain !== undefined ? { maxTrain } : {}),
      trainer,
      // json: progress as plain lines on stderr, no redrawn bars between the result lines.
      out: {
        json: true,
        tty: false,
        line: (text) => console.error(text),
        jsonLine: (value) => console.error(JSON.stringify(value)),
        note: (text) => console.error(text),
      },
      onRow: (row) => console.log(JSON.stringify(benchLine(row))),
    });
  } finally {
    trainer.close();
    await server?.shutdown("bench done");
  }
}

if (import.meta.main) await main(Deno.args);

/** A small Dockerfile reader: stages, their instructions, and what a target inherits from its parents. */

export type Instruction = { keyword: string; args: string; line: number };
export type Stage = { name: string; from: string; instructions: Instruction[] };

/** Stages of a Dockerfile with their instructions (continuation lines joined, comments dropped). */
export function parseStages(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith("\\") && i + 1 < lines.length) line = line.slice(0, -1) + " " + lines[++i]!.trim();
    const m = /^\s*(\w+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const ins = { keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start + 1 };
    if (ins.keyword === "FROM") {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)!;
      stages.push({ name: f[2] ?? `#${stages.length}`, from: f[1]!, instructions: [] });
    } else if (ins.keyword !== "ARG" || stages.length > 0) {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return stages;
}

/** The last `keyword` a target's image carries, looking through the stages it is built FROM. */
export function effective(stages: Stage[], target: string, keyword: string): Instruction | undefined {
  const stage = stages.find((s) => s.name === target);
  if (!stage) return undefined;
  const own = stage.instructions.filter((i) => i.keyword === keyword).at(-1);
  return own ?? effective(stages, stage.from, keyword);
}

/** ENV pairs a target's image carries, parents first. */
export function envOf(stages: Stage[], target: string): Map<string, string> {
  const stage = stages.find((s) => s.name === target);
  const env = stage ? envOf(stages, stage.from) : new Map<string, string>();
  for (const i of stage?.instructions.filter((i) => i.keyword === "ENV") ?? []) {
    for (const m of i.args.matchAll(/(\w+)=(\S+)/g)) env.set(m[1]!, m[2]!);
  }
  return env;
}

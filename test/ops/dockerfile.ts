/**
 * Reads the Dockerfile as text (no Docker engine runs in CI): its instructions, its stages, and the
 * exec-form arrays and environment of an instruction. Shared by the Dockerfile's text checks and the
 * test that runs the image's layout (image-runtime.test.ts).
 */

export interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Joins `\` continuations, drops comments and blank lines, splits keyword from arguments. */
export function parseDockerfile(text: string): Instruction[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (current === '' && /^\s*#/.test(line)) continue;
    if (line.endsWith('\\')) {
      current += line.slice(0, -1) + ' ';
      continue;
    }
    current += line;
    if (current.trim() !== '') logical.push(current.trim());
    current = '';
  }
  return logical.map((l) => {
    const m = /^(\S+)\s*(.*)$/.exec(l)!;
    return { keyword: m[1].toUpperCase(), args: m[2] };
  });
}

export interface Stage {
  readonly image: string;
  readonly name?: string;
  readonly instructions: Instruction[];
}

/** Splits into stages, expanding `${ARG}` in FROM from the ARGs declared before the first FROM. */
export function stages(instructions: Instruction[]): Stage[] {
  const globalArgs = new Map<string, string>();
  const result: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`cannot parse FROM ${ins.args}`);
      const image = m[1].replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_, name: string) => {
        const value = globalArgs.get(name);
        if (value === undefined) throw new Error(`FROM uses ARG ${name} without a default`);
        return value;
      });
      result.push({ image, name: m[2], instructions: [] });
    } else if (result.length === 0 && ins.keyword === 'ARG') {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(\S+)$/.exec(ins.args);
      if (m) globalArgs.set(m[1], m[2]);
    } else if (result.length > 0) {
      result[result.length - 1].instructions.push(ins);
    }
  }
  return result;
}

/** Exec form: a JSON array of strings. */
export function execForm(args: string): string[] | undefined {
  try {
    const parsed: unknown = JSON.parse(args);
    return Array.isArray(parsed) && parsed.every((a) => typeof a === 'string') ? (parsed as string[]) : undefined;
  } catch {
    return undefined;
  }
}


/** The variables a stage's ENV instructions set (`KEY=value` pairs, the value bare or double-quoted). */
export function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const ins of stage.instructions.filter((i) => i.keyword === 'ENV')) {
    const pairs = [...ins.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)];
    if (pairs.length === 0) throw new Error(`ENV ${ins.args}: only the KEY=value form is read`);
    for (const [, key, value] of pairs) env[key] = value.startsWith('"') ? value.slice(1, -1).replace(/\\(.)/g, '$1') : value;
  }
  return env;
}

/** The stage's working directory (its last WORKDIR; `/` without one). */
export function workdirOf(stage: Stage): string {
  return stage.instructions.filter((i) => i.keyword === 'WORKDIR').at(-1)?.args ?? '/';
}

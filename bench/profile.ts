/**
 * Reads a V8 `.cpuprofile` (written by `node --cpu-prof`) and lists the functions with the most
 * self time, so a missed target comes with evidence of where the time went.
 *
 *   node dist/bench/profile.js <file.cpuprofile> [top]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTimeEntry {
  function: string;
  location: string;
  selfMs: number;
  percent: number;
}

function shortUrl(url: string): string {
  if (!url) return '';
  const clean = url.replace(/^file:\/\//, '');
  const nm = clean.lastIndexOf('node_modules/');
  if (nm >= 0) return clean.slice(nm + 'node_modules/'.length);
  const marks = ['/src/', '/emulator/', '/bench/'];
  for (const m of marks) {
    const i = clean.lastIndexOf(m);
    if (i >= 0) return clean.slice(i + 1);
  }
  return path.basename(clean);
}

/** Top functions by self time (samples attributed to the function itself, not its callees). */
export function topSelfTime(file: string, top = 20): { totalMs: number; entries: SelfTimeEntry[] } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) byId.set(n.id, n);
  const selfUs = new Map<string, number>();
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    const dt = profile.timeDeltas[i] ?? 0;
    if (!node) continue;
    const cf = node.callFrame;
    const key = `${cf.functionName || '(anonymous)'}\u0000${shortUrl(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
    selfUs.set(key, (selfUs.get(key) ?? 0) + dt);
    totalUs += dt;
  }
  const entries = [...selfUs.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, us]) => {
      const [fn, location] = key.split('\u0000');
      return { function: fn, location, selfMs: us / 1000, percent: (100 * us) / Math.max(1, totalUs) };
    });
  return { totalMs: totalUs / 1000, entries };
}

/** Renders the top list as text lines. */
export function renderTop(result: { totalMs: number; entries: SelfTimeEntry[] }): string {
  const lines = [`total sampled ${result.totalMs.toFixed(0)} ms`];
  for (const e of result.entries) lines.push(`${e.percent.toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(0).padStart(6)} ms  ${e.function}  ${e.location}`);
  return lines.join('\n');
}

if (process.argv[1] && path.basename(process.argv[1]) === 'profile.js') {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node profile.js <file.cpuprofile> [top]\n');
    process.exit(2);
  }
  process.stdout.write(renderTop(topSelfTime(file, Number(process.argv[3] ?? 25))) + '\n');
}

/** The shape of the JSON report and the text table printed at the end of a run. */
import type { Spread } from './stats.js';

/** One figure of one candidate: the median over rounds with min and max. */
export interface Figure {
  figure: string;
  candidate: string;
  unit: string;
  value: Spread;
}

/** One target of the issue and whether this run met it (null: not measured in this run). */
export interface TargetCheck {
  target: string;
  measured: string;
  met: boolean | null;
}

export interface ScenarioResult {
  name: string;
  title: string;
  figures: Figure[];
  targets: TargetCheck[];
  /** Per-round raw results and anything else worth keeping. */
  details: Record<string, unknown>;
  notes: string[];
  durationSec: number;
}

export interface BenchReport {
  startedAt: string;
  mode: 'full' | 'quick';
  /** What was run: `git rev-parse HEAD` (null without git), whether the tree had changes, and the command line. */
  provenance: { commit: string | null; dirty: boolean | null; argv: string[]; node: string };
  machine: { cpuModel: string; cores: number; node: string; platform: string; loadBefore: string; loadAfter: string; placement: string; tools: Record<string, string> };
  scenarios: ScenarioResult[];
  errors: Array<{ scenario: string; message: string }>;
  durationSec: number;
  /** With --cpu-prof: the shared sidecar's top self-time functions. */
  profile?: { file: string; totalMs: number; top: Array<{ function: string; location: string; selfMs: number; percent: number }> };
}

/** Formats a number for the table: 3 significant digits, thousands kept whole. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const a = Math.abs(n);
  if (a >= 1000) return Math.round(n).toString();
  if (a >= 100) return n.toFixed(0);
  if (a >= 10) return n.toFixed(1);
  if (a >= 1) return n.toFixed(2);
  return n.toFixed(3);
}

/** `median (min–max)`. */
export function fmtSpread(s: Spread): string {
  const flag = s.invalid ? ` [${s.invalid} of ${s.values.length} rounds invalid]` : '';
  if (s.values.length <= 1 || s.min === s.max) return fmt(s.median) + flag;
  return `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})${flag}`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}

/** The human-readable summary printed to stdout. */
export function renderText(report: BenchReport): string {
  const m = report.machine;
  const out: string[] = [];
  out.push(`entra-sidecar bench (${report.mode}) — ${report.startedAt}; commit ${report.provenance.commit ?? 'unknown'}${report.provenance.dirty ? ' (with uncommitted changes)' : ''}`);
  out.push(`CPU: ${m.cpuModel}, ${m.cores} cores; Node ${m.node}; ${m.placement}`);
  out.push(`load average before: ${m.loadBefore}; after: ${m.loadAfter}`);
  out.push(`figures are median (min–max) over rounds`);
  for (const s of report.scenarios) {
    out.push('');
    out.push(`## ${s.name}: ${s.title}  [${s.durationSec.toFixed(0)} s]`);
    if (s.figures.length) {
      out.push(table([['figure', 'candidate', 'value', 'unit'], ...s.figures.map((f) => [f.figure, f.candidate, fmtSpread(f.value), f.unit])]));
    }
    if (s.targets.length) {
      out.push('');
      out.push(table([['target', 'measured', 'met'], ...s.targets.map((t) => [t.target, t.measured, t.met === null ? 'n/a' : t.met ? 'yes' : 'NO'])]));
    }
    for (const n of s.notes) out.push(`note: ${n}`);
  }
  for (const e of report.errors) out.push(`\nERROR in ${e.scenario}: ${e.message}`);
  out.push(`\ntotal ${report.durationSec.toFixed(0)} s`);
  return out.join('\n');
}

/** The same results as a Markdown table (for bench/README.md). */
export function renderMarkdown(report: BenchReport): string {
  const out: string[] = [];
  const m = report.machine;
  out.push(`Run: ${report.startedAt} (${report.mode}), commit ${report.provenance.commit ?? 'unknown'}${report.provenance.dirty ? ' (with uncommitted changes)' : ''}, command \`${report.provenance.argv.join(' ')}\`, ${m.cpuModel}, ${m.cores} cores, Node ${m.node}; ${m.placement}. Load average before ${m.loadBefore}, after ${m.loadAfter}.`);
  out.push('');
  out.push('| scenario | figure | candidate | median (min–max) | unit |');
  out.push('|---|---|---|---|---|');
  for (const s of report.scenarios) for (const f of s.figures) out.push(`| ${s.name} | ${f.figure} | ${f.candidate} | ${fmtSpread(f.value)} | ${f.unit} |`);
  out.push('');
  out.push('| target | measured | met |');
  out.push('|---|---|---|');
  for (const s of report.scenarios) for (const t of s.targets) out.push(`| ${t.target} | ${t.measured} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} |`);
  return out.join('\n');
}

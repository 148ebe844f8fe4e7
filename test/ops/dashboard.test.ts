import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createMetrics } from '../../src/metrics.js';
import { repoRoot } from './paths.js';

interface Target {
  expr?: string;
}
interface Panel {
  title?: string;
  targets?: Target[];
  panels?: Panel[];
}

function allExprs(dashboard: { panels: Panel[]; templating?: { list: { definition?: string }[] } }): string[] {
  const exprs: string[] = [];
  const walk = (panels: Panel[]) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) if (t.expr !== undefined) exprs.push(t.expr);
      walk(p.panels ?? []);
    }
  };
  walk(dashboard.panels);
  for (const v of dashboard.templating?.list ?? []) if (v.definition) exprs.push(v.definition);
  return exprs;
}

/** Every sample name the registry can expose, including histogram `_bucket`/`_sum`/`_count`. */
async function exposedNames(): Promise<Set<string>> {
  const m = createMetrics({ version: 'x', collectProcess: true });
  const names = new Set<string>();
  for (const metric of await m.registry.getMetricsAsJSON()) {
    names.add(metric.name);
    if (String(metric.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(metric.name + s);
  }
  return names;
}

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(path.join(repoRoot, 'docs', 'grafana-dashboard.json'), 'utf8')) as {
    title: string;
    uid: string;
    panels: Panel[];
    templating?: { list: { definition?: string }[] };
  };

  it('is a dashboard with panels and queries', () => {
    expect(dashboard.title).to.equal('entra-sidecar');
    expect(dashboard.panels.length).to.be.greaterThan(5);
    expect(allExprs(dashboard).length).to.be.greaterThan(5);
  });

  it('queries only metric names that the registry exposes', async () => {
    const names = await exposedNames();
    for (const expr of allExprs(dashboard)) {
      const used = [...expr.matchAll(/\b((?:entra_sidecar|process|nodejs)_[a-z0-9_]+)\b/g)].map((m) => m[1]);
      expect(used.length, `no sidecar metric in: ${expr}`).to.be.greaterThan(0);
      for (const name of used) expect(names.has(name), `${name} in ${expr}`).to.equal(true);
    }
  });

  it('covers every entra_sidecar metric family', async () => {
    const families = (await createMetrics({ version: 'x', collectProcess: false }).registry.getMetricsAsJSON()).map((m) => m.name);
    const text = allExprs(dashboard).join('\n');
    for (const family of families) expect(text, family).to.match(new RegExp(`\\b${family}(_bucket|_sum|_count)?\\b`));
  });

  it('groups only by labels the metrics carry', async () => {
    // Touch every labelled metric so its label names show up in the series.
    const m = createMetrics({ version: 'x', collectProcess: false });
    m.observeHttpRequest('Validate', 200, 0.001);
    m.observeCheck('allow', 'ok', 0.001);
    m.countTokenAcquisition('on_behalf_of', 'ok');
    m.observeOutbound('token', 200, 0.01);
    m.countSigningKeysRefresh('ok');
    m.countValidationFailure('token_expired');
    const labels = new Set(['job', 'instance']);
    for (const metric of await m.registry.getMetricsAsJSON()) {
      for (const v of metric.values) for (const k of Object.keys(v.labels)) labels.add(k);
    }
    for (const expr of allExprs(dashboard)) {
      for (const m of expr.matchAll(/\bby \(([^)]*)\)/g)) {
        for (const l of m[1].split(',').map((s) => s.trim())) expect(labels.has(l), `${l} in ${expr}`).to.equal(true);
      }
    }
  });
});

describe('docs/deployment.md', () => {
  it('names only metrics that the registry exposes', async () => {
    const names = await exposedNames();
    const text = readFileSync(path.join(repoRoot, 'docs', 'deployment.md'), 'utf8');
    // `entra_sidecar_token_cache_{hits,…}_total` is written as a brace list: expand it.
    const expanded = text.replace(/(entra_sidecar_[a-z0-9_]*)\{([a-z,]+)\}([a-z0-9_]*)/g, (_, pre: string, list: string, post: string) => list.split(',').map((x) => pre + x + post).join(' '));
    const used = new Set([...expanded.matchAll(/\bentra_sidecar_[a-z0-9_]*[a-z0-9]\b/g)].map((m) => m[0]));
    expect(used.size).to.be.greaterThan(10);
    for (const name of used) expect(names.has(name), name).to.equal(true);
  });
});

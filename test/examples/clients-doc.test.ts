/**
 * The TypeScript and Python helpers of docs/clients.md, run against the built sidecar: they must
 * report every kind of answer the sidecar gives, not only JSON ones. A 403 IDW10203 text, an empty
 * 404/405/403 or a bodiless 401 challenge must come out as an error naming the status, not as a
 * JSON parse failure; a ProblemDetails as its code and detail; a success as the parsed JSON.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { sidecarEnv } from '../helpers/e2e.js';
import { repoRoot } from './repo.js';

/** The code of the first fenced block of `lang` after `heading`, up to the first line starting with `stopAt`. */
function helperCode(heading: string, lang: string, stopAt: string): string {
  const doc = readFileSync(path.join(repoRoot(), 'docs', 'clients.md'), 'utf8');
  const section = doc.slice(doc.indexOf(heading));
  const start = section.indexOf('```' + lang + '\n') + lang.length + 4;
  const block = section.slice(start, section.indexOf('\n```', start));
  const stop = block.split('\n').findIndex((line) => line.startsWith(stopAt));
  expect(stop, `the ${lang} block of docs/clients.md has a line starting with ${stopAt}`).to.be.above(0);
  return block.split('\n').slice(0, stop).join('\n');
}

/** What one helper call came to: the parsed JSON, or the error's type and message. */
interface Outcome {
  ok?: unknown;
  error?: string;
  message?: string;
}

/** The calls both helpers make; `user` and `unscoped` are tokens with and without AzureAd:Scopes. */
function cases(user: string, unscoped: string): Array<{ name: string; method: string; path: string; token?: string; headers?: Record<string, string> }> {
  return [
    { name: 'validated', method: 'GET', path: '/Validate', token: user },
    { name: 'idw10203', method: 'GET', path: '/Validate', token: unscoped },
    { name: 'challenge', method: 'GET', path: '/Validate' },
    { name: 'notFound', method: 'GET', path: '/Nowhere' },
    { name: 'wrongMethod', method: 'POST', path: '/Validate', token: user },
    { name: 'browser', method: 'GET', path: '/Validate', token: user, headers: { Origin: 'http://evil.example' } },
    { name: 'problem', method: 'GET', path: '/AuthorizationHeader/unconfigured', token: user },
  ];
}

/** What both helpers must report for each case. */
function expectOutcomes(outcomes: Record<string, Outcome>): void {
  expect((outcomes.validated.ok as { protocol: string }).protocol).to.equal('Bearer');
  expect(outcomes.idw10203.message).to.equal("HTTP 403: IDW10203: The 'scope' or 'scp' claim does not contain scopes 'access_as_user' or was not found.");
  expect(outcomes.challenge.message).to.match(/^(unauthorized: )?Bearer$/);
  expect(outcomes.notFound.message).to.equal('HTTP 404');
  expect(outcomes.wrongMethod.message).to.equal('HTTP 405');
  expect(outcomes.browser.message).to.equal('HTTP 403');
  expect(outcomes.problem.message).to.equal("scopes_missing: No scopes found for the API 'unconfigured' or in optionsOverride. 'scopes' needs to be either a single value or a list of values.");
}

describe('docs/clients.md helpers (built sidecar against the emulator)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let dir: string;
  let user: string;
  let unscoped: string;

  before(async () => {
    emu = await startEmulator();
    sidecar = await startSidecar(sidecarEnv(emu, { AzureAd__Scopes: 'access_as_user' }));
    dir = mkdtempSync(path.join(tmpdir(), 'clients-doc-'));
    user = await emu.mint({ kind: 'user', scp: 'access_as_user' });
    unscoped = await emu.mint({ kind: 'user', scp: 'other' });
  });
  after(async () => {
    await sidecar?.stop();
    await emu?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the TypeScript helper reports each kind of answer by its status, code or JSON', async () => {
    const source = helperCode('## TypeScript', 'ts', '// Validate');
    const js = ts.transpileModule(`${source}\nexport { sidecar };\n`, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } }).outputText;
    const file = path.join(dir, 'helper.mjs');
    writeFileSync(file, js.replace("process.env.SIDECAR_URL ?? 'http://127.0.0.1:5000'", JSON.stringify(sidecar.url)));
    expect(readFileSync(file, 'utf8'), 'the helper reads SIDECAR_URL as the test expects').to.contain(JSON.stringify(sidecar.url));
    const { sidecar: call } = (await import(pathToFileURL(file).href)) as { sidecar: (p: string, init?: RequestInit, token?: string) => Promise<unknown> };
    const outcomes: Record<string, Outcome> = {};
    for (const c of cases(user, unscoped)) {
      try {
        outcomes[c.name] = { ok: await call(c.path, { method: c.method, headers: c.headers }, c.token) };
      } catch (err) {
        outcomes[c.name] = { error: (err as Error).name, message: (err as Error).message };
      }
    }
    for (const [name, o] of Object.entries(outcomes)) expect(o.error ?? 'Error', `${name}: ${o.message}`).to.equal('Error');
    expectOutcomes(outcomes);
  });

  it('the Python helper reports each kind of answer by its status, code or JSON', async function () {
    // Only PATH (and the sidecar's URL): no proxy variable may send requests elsewhere.
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
    const probe = await run(PYTHON, ['-c', 'import requests'], env);
    if (probe.code !== 0) {
      // CI installs it (.ci/run: python3-requests), so there a missing module is a broken environment.
      if (process.env.CI) throw new Error(`${PYTHON} cannot import requests (install python3-requests): ${probe.stderr.trim().split('\n').pop() ?? ''}`);
      this.skip();
    }
    const driver = `
import json, sys
results = {}
for c in json.loads(sys.argv[1]):
    try:
        results[c["name"]] = {"ok": sidecar(c["method"], c["path"], c.get("token"), headers=c.get("headers", {}))}
    except Exception as e:
        results[c["name"]] = {"error": type(e).__name__, "message": str(e)}
print(json.dumps(results))
`;
    const file = path.join(dir, 'helper.py');
    writeFileSync(file, `${helperCode('## Python', 'python', 'claims =')}\n${driver}`);
    const r = await run(PYTHON, [file, JSON.stringify(cases(user, unscoped))], { ...env, SIDECAR_URL: sidecar.url });
    expect(r.code, r.stderr).to.equal(0);
    const outcomes = JSON.parse(r.stdout) as Record<string, Outcome>;
    for (const [name, o] of Object.entries(outcomes)) expect(o.error ?? 'RuntimeError', `${name}: ${o.message}`).to.be.oneOf(['RuntimeError', 'PermissionError']);
    expect(outcomes.challenge.error).to.equal('PermissionError');
    expectOutcomes(outcomes);
  });
});

/** Debian's Python, which .ci/run gives python3-requests (the one on PATH may be another). */
const PYTHON = '/usr/bin/python3';

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

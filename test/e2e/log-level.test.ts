/**
 * The log level from .NET's `Logging__LogLevel__Default` (what a deployment moved over from
 * Microsoft's image sets), through the built process: no `Sidecar__LogLevel`, so the mapped level
 * alone decides which lines are written. The listening line is written whatever the level.
 */
import { expect } from 'chai';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { createServer, type Server } from 'node:net';
import { runSidecarToExit, startSidecar, waitForLine } from '../helpers/sidecar.js';
import { assertNoSecrets, call, secretsOf, sidecarEnv } from '../helpers/e2e.js';

interface LogLine {
  level: string;
  event?: string;
  msg: string;
}

describe('Logging:LogLevel:Default (built sidecar)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  const tokens: string[] = [];
  before(async () => {
    emu = await startEmulator();
  });
  after(async () => {
    await emu?.close();
  });

  /**
   * Runs a sidecar at `level` through a start, one request that logs a warning (an
   * optionsOverride.* on a route whose AllowOverrides switch is off by default) and a SIGTERM;
   * returns every line it wrote.
   */
  async function linesAt(level: string): Promise<LogLine[]> {
    const env = sidecarEnv(emu, {
      Logging__LogLevel__Default: level,
      DownstreamApis__app__Scopes__0: 'api://downstream/.default',
      DownstreamApis__app__RequestAppToken: 'true',
    });
    delete env.Sidecar__LogLevel;
    const s = await startSidecar(env);
    try {
      const r = await call(`${s.url}/AuthorizationHeaderUnauthenticated/app?optionsOverride.Scopes=${encodeURIComponent('api://legacy-v1/.default')}`);
      expect(r.status, r.text).to.equal(200);
      tokens.push(r.json().authorizationHeader.slice(7));
      expect(await waitForLine(s, '"event":"OverridesIgnored"'), 'the OverridesIgnored warning').to.equal(true);
    } finally {
      expect(await s.stop()).to.equal(0);
    }
    assertNoSecrets(s.lines, secretsOf(emu, tokens));
    return s.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
  }

  const levelsOf = (lines: LogLine[]) => [...new Set(lines.filter((l) => l.event !== 'listening').map((l) => l.level))].sort();

  it('Information (the default): information and warning lines, no debug lines', async () => {
    const lines = await linesAt('Information');
    expect(levelsOf(lines)).to.deep.equal(['info', 'warn']);
    expect(lines.map((l) => l.event)).to.include.members(['listening', 'OverridesIgnored', 'shutdown', 'stopped']);
  });

  it('Warning: the warning, and no information or debug line but the listening line', async () => {
    const lines = await linesAt('Warning');
    expect(levelsOf(lines)).to.deep.equal(['warn']);
    expect(lines.map((l) => l.event)).to.deep.equal(['listening', 'OverridesIgnored']);
  });
});

/**
 * The lines a process that cannot start or go on writes (docs/errors.md, "When the process cannot
 * start or go on"): at `None` too, or a failure would leave no trace at all.
 */
describe('Logging:LogLevel:Default=None: a process failure still says why (built sidecar)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  before(async () => {
    emu = await startEmulator();
  });
  after(async () => {
    await emu?.close();
  });

  function envAt(level: string, extra: Record<string, string> = {}): Record<string, string> {
    const env = sidecarEnv(emu, { Logging__LogLevel__Default: level, ...extra });
    delete env.Sidecar__LogLevel;
    return env;
  }

  /** The JSON lines of an output (anything else fails the test: every line is one JSON object). */
  const jsonLines = (text: string) => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

  it('writes the start_failed line and exits 1 when the identity API port is taken', async () => {
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const port = (taken.address() as { port: number }).port;
      const { code, stdout, stderr } = await runSidecarToExit(envAt('None', { Sidecar__Http__Url: `http://127.0.0.1:${port}` }));
      expect(code).to.equal(1);
      expect(stderr).to.equal('');
      const lines = jsonLines(stdout);
      expect(lines, stdout).to.have.length(1);
      expect(lines[0]).to.include({ level: 'fatal', service: 'entra-sidecar', code: 'start_failed', msg: 'failed to start' });
      expect(lines[0].err).to.include(`127.0.0.1:${port}`).and.include('Sidecar__Http__Url');
    } finally {
      taken.close();
    }
  });

  for (const [kind, code, msg, fault] of [
    ['an uncaught exception', 'uncaught_exception', 'uncaught exception', "setImmediate(() => { throw new Error('injected fault'); })"],
    ['an unhandled rejection', 'unhandled_rejection', 'unhandled rejection', "void Promise.reject(new Error('injected fault'))"],
  ] as const) {
    it(`writes the ${code} line and exits 70 on ${kind}`, async () => {
      // A preloaded module arms the fault on SIGUSR2, so it fires in a sidecar that is running.
      const preload = `data:text/javascript,${encodeURIComponent(`process.on('SIGUSR2', () => { ${fault}; });`)}`;
      const s = await startSidecar(envAt('None'), { nodeArgs: [`--import=${preload}`] });
      s.child.kill('SIGUSR2');
      // The process exits right after writing the line, so stop() then finds it gone (no SIGTERM).
      expect(await waitForLine(s, `"code":"${code}"`, 10_000), s.lines.join('\n')).to.equal(true);
      expect(await s.stop(10_000)).to.equal(70);
      const lines = s.lines.filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.map((l) => l.event ?? l.code), s.lines.join('\n')).to.deep.equal(['listening', code]);
      expect(lines[1]).to.include({ level: 'fatal', service: 'entra-sidecar', msg });
      expect(lines[1].err).to.equal('Error: injected fault');
    });
  }
});

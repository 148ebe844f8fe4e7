/**
 * The log level from .NET's `Logging__LogLevel__Default` (what a deployment moved over from
 * Microsoft's image sets), through the built process: no `Sidecar__LogLevel`, so the mapped level
 * alone decides which lines are written. The listening line is written whatever the level.
 */
import { expect } from 'chai';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { startSidecar, waitForLine } from '../helpers/sidecar.js';
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

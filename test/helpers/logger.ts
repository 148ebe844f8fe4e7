/** A pino logger (our createLogger, same redaction) writing into memory, for asserting on log lines. */
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/log.js';

/** `lines` holds each JSON line written; `text()` is all of them joined. */
export function memoryLogger(level = 'debug'): { logger: Logger; lines: string[]; text(): string } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { logger: createLogger(level, stream), lines, text: () => lines.join('') };
}

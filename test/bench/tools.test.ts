/**
 * The parsers of h2load's and wrk's summaries (bench/tools.ts), on output those tools really
 * printed (nghttp2 1.52's h2load, Debian's wrk), and the statistics helpers (bench/stats.ts).
 */
import { expect } from 'chai';
import { parseH2load, parseWrk } from '../../bench/tools.js';
import { percentileSorted, spread, summarizeLatencies } from '../../bench/stats.js';

/** h2load -n 100 against a node:http2 server answering every request 500. */
const H2LOAD_100_500S = `finished in 39.90ms, 2506.58 req/s, 29.20KB/s
requests: 100 total, 100 started, 100 done, 0 succeeded, 100 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 100 5xx
traffic: 1.17KB (1193) total, 223B (223) headers (space savings 94.81%), 0B (0) data
                     min         max         mean         sd        +/- sd
time for request:      346us     12.72ms      1.47ms      2.52ms    92.00%
`;

/** h2load -n 10 against a closed port. */
const H2LOAD_REFUSED = `finished in 688us, 0.00 req/s, 0B/s
requests: 10 total, 0 started, 0 done, 0 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 0B (0) total, 0B (0) headers (space savings 0.00%), 0B (0) data
`;

/** h2load -n 1000 against the do-nothing Check server: 1,000 answers of 9 DATA bytes (5-byte prefix + a 4-byte CheckResponse). */
const H2LOAD_NOP = `finished in 512.41ms, 1951.57 req/s, 84.22KB/s
requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 43.16KB (44192) total, 5.32KB (5452) headers (space savings 96.08%), 8.79KB (9000) data
`;

/** h2load -D 1 (timed, no warm-up): 32 requests still in flight at the end, none of their data counted. */
const H2LOAD_TIMED = `finished in 1.00s, 1360.00 req/s, 58.46KB/s
requests: 1360 total, 1392 started, 1360 done, 1360 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 1360 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 58.46KB (59867) total, 7.08KB (7252) headers (space savings 96.16%), 11.95KB (12240) data
`;

/** h2load -D 1 --warm-up-time 1: the data figure holds the warm-up's answers (7,656 × 9 B), done does not. */
const H2LOAD_WITH_WARMUP = `finished in 2.00s, 5128.00 req/s, 218.90KB/s
requests: 5128 total, 5128 started, 5128 done, 5128 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 5144 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 218.90KB (224150) total, 37.91KB (38824) headers (space savings 96.35%), 67.29KB (68904) data
`;

const WRK_500S = `Running 1s test @ http://127.0.0.1:18123/bad
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   270.84us  759.25us  10.07ms   92.35%
    Req/Sec    31.75k    14.27k   44.03k    80.00%
  Latency Distribution
     50%   40.00us
     75%   75.00us
     90%  665.00us
     99%    3.94ms
  31444 requests in 1.00s, 4.26MB read
  Non-2xx or 3xx responses: 31444
Requests/sec:  31408.57
Transfer/sec:      4.25MB
`;

describe('bench tools: parseH2load', () => {
  it('counts 100 HTTP 500s as 100 errors, not 200', () => {
    const r = parseH2load(H2LOAD_100_500S);
    expect(r.errors).to.equal(100);
    expect(r.requests).to.equal(100);
  });

  it('counts the requests of a refused connection once', () => {
    expect(parseH2load(H2LOAD_REFUSED).errors).to.equal(10);
  });

  it('accepts a run whose DATA bytes are exactly its answers × the allow', () => {
    const r = parseH2load(H2LOAD_NOP, 9);
    expect(r.errors).to.equal(0);
    expect(r.dataBytes).to.equal(9000);
    expect(r.answerCheck).to.deep.equal({ bytesPerAnswer: 9, ok: true });
    expect(parseH2load(H2LOAD_TIMED, 9).errors).to.equal(0);
  });

  it('counts answers that were not the allow (a deny is HTTP 200 with grpc-status 0) from the DATA bytes', () => {
    // The same run, had 100 of the 1,000 answers been a 40-byte deny instead of the 9-byte allow.
    const denied = H2LOAD_NOP.replace('(9000) data', `(${900 * 9 + 100 * 40}) data`);
    const r = parseH2load(denied, 9);
    expect(r.answerCheck?.ok).to.equal(false);
    expect(r.errors).to.be.greaterThan(0);
    // A different allow length (another answer than the one fetched) fails as well.
    expect(parseH2load(H2LOAD_NOP, 10).errors).to.be.greaterThan(0);
  });

  it("flags h2load's warm-up data (why runH2load runs its warm-up as a separate process)", () => {
    expect(parseH2load(H2LOAD_WITH_WARMUP, 9).answerCheck?.ok).to.equal(false);
  });
});

describe('bench tools: parseWrk', () => {
  it('reads rate, count, latency percentiles and non-2xx answers', () => {
    const r = parseWrk(WRK_500S);
    expect(r.rps).to.equal(31408.57);
    expect(r.requests).to.equal(31444);
    expect(r.errors).to.equal(31444);
    expect(r.p50Ms).to.be.closeTo(0.04, 1e-9);
    expect(r.p99Ms).to.be.closeTo(3.94, 1e-9);
  });

  it('adds socket errors', () => {
    const r = parseWrk(WRK_500S.replace('  Non-2xx or 3xx responses: 31444\n', '  Socket errors: connect 1, read 2, write 3, timeout 4\n'));
    expect(r.errors).to.equal(10);
  });
});

describe('bench stats', () => {
  it('takes the mean of the two middle values for an even count', () => {
    const s = spread([4, 1, 3, 2]);
    expect(s.median).to.equal(2.5);
    expect([s.min, s.max]).to.deep.equal([1, 4]);
    expect(spread([5, 1, 3]).median).to.equal(3);
  });

  it('flags non-finite rounds instead of dropping them silently', () => {
    const s = spread([1, Number.NaN, 3, Number.POSITIVE_INFINITY]);
    expect(s.median).to.equal(2);
    expect(s.invalid).to.equal(2);
    expect(s.values).to.have.length(4);
    expect(spread([1, 2]).invalid).to.equal(undefined);
    expect(spread([Number.NaN]).median).to.be.NaN;
  });

  it('takes nearest-rank percentiles', () => {
    const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentileSorted(sorted, 50)).to.equal(50);
    expect(percentileSorted(sorted, 99)).to.equal(99);
    expect(percentileSorted(sorted, 99.9)).to.equal(100);
    expect(percentileSorted(sorted, 0)).to.equal(1);
    expect(percentileSorted([], 50)).to.be.NaN;
    const l = summarizeLatencies([3, 1, 2, 10]);
    expect([l.count, l.p50, l.p90, l.max, l.mean]).to.deep.equal([4, 2, 10, 10, 4]);
  });
});

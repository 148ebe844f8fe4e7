/** Small assertions shared by the unit suites. */
import { expect } from 'chai';
import { SidecarError } from '../../src/errors.js';

/** Awaits a promise that must reject with a SidecarError, and returns that error. */
export async function rejection(p: Promise<unknown>): Promise<SidecarError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(SidecarError);
    return err as SidecarError;
  }
  throw new Error('expected a rejection');
}

/** Calls `fn`, which must throw a SidecarError, and returns that error (fails if it returns or throws anything else). */
export function thrown(fn: () => unknown): SidecarError {
  let returned = false;
  try {
    fn();
    returned = true;
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(SidecarError);
    return err as SidecarError;
  }
  expect(returned, 'expected a SidecarError to be thrown').to.equal(false);
  throw new Error('unreachable');
}

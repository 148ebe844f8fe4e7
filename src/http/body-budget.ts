/**
 * The process-wide bound on request bodies held in memory (Sidecar:Http:MaxBufferedBodyBytes).
 * Sidecar:Http:MaxBodyBytes bounds one body (Kestrel's 30 MB by default); without a bound across
 * requests, twelve concurrent 29 MB POSTs took the sidecar from 85 to 627 MiB, over the example
 * pod's 384Mi limit. A body's bytes are reserved here before they are kept and released once the
 * request is done with them.
 */
export class BodyBudget {
  readonly #max: number;
  #held = 0;

  constructor(maxBytes: number) {
    this.#max = maxBytes;
  }

  /** The most all bodies may hold together. */
  get maxBytes(): number {
    return this.#max;
  }

  /** Bytes reserved now. */
  get heldBytes(): number {
    return this.#held;
  }

  /** Reserves `bytes` if they fit beside what is held; false (and nothing reserved) otherwise. */
  tryReserve(bytes: number): boolean {
    if (this.#held + bytes > this.#max) return false;
    this.#held += bytes;
    return true;
  }

  /** Gives back `bytes` reserved earlier. */
  release(bytes: number): void {
    this.#held = Math.max(0, this.#held - bytes);
  }
}

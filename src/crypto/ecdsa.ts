import { recover } from 'tiny-secp256k1';
import { keccak256 } from 'viem';

/**
 * secp256k1 public-key recovery with libsecp256k1 compiled to WASM (`tiny-secp256k1`), for
 * 65-byte `r ‖ s ‖ v` signatures given as hex, accepting and refusing exactly what viem's
 * `recoverAddress` (pure-JS noble-curves) accepts and refuses:
 * - the hex is `0x` + hex digits and its size, rounded up to whole bytes, is 65 (viem uses
 *   `size()`, so 129 digits pass too: the last digit alone is then `v`);
 * - `v` (everything after the 128 digits of `r ‖ s`) is 0, 1, 27 or 28;
 * - 1 ≤ r < n and 1 ≤ s < n; a high s is accepted (neither viem nor libsecp256k1's recover
 *   normalises it; ERC-20 contracts that want low s check it themselves on chain);
 * - r is the x coordinate of a curve point and the recovered key is not the point at infinity.
 * test/crypto/signatures.test.ts checks this equivalence on random and tampered signatures.
 */

/** secp256k1 group order n, big-endian. */
const N = Buffer.from('fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141', 'hex');
const HEX = /^0x[0-9a-fA-F]*$/;

export interface ParsedSignature {
  /** r ‖ s, 64 bytes. */
  rs: Uint8Array;
  recoveryId: 0 | 1;
}

/**
 * The signature as viem reads a hex signature; `null` when viem refuses it whatever the message
 * (wrong size, bad v, r or s out of range); `undefined` when it is not a `0x` hex string at all
 * (bytes, an object, or a string viem would first re-encode): not for this fast path.
 */
export function parseSignature(signature: unknown): ParsedSignature | null | undefined {
  if (typeof signature !== 'string' || !HEX.test(signature)) return undefined;
  if (Math.ceil((signature.length - 2) / 2) !== 65) return null;
  const v = Number.parseInt(signature.slice(130), 16);
  const recoveryId = v === 0 || v === 27 ? 0 : v === 1 || v === 28 ? 1 : undefined;
  if (recoveryId === undefined) return null;
  const rs = Buffer.from(signature.slice(2, 130), 'hex');
  if (!scalarInRange(rs.subarray(0, 32)) || !scalarInRange(rs.subarray(32, 64))) return null;
  return { rs, recoveryId };
}

/** 1 ≤ x < n, for a 32-byte big-endian scalar. */
function scalarInRange(x: Uint8Array): boolean {
  let zero = true;
  for (let i = 0; i < 32; i++) {
    if (x[i] !== 0) {
      zero = false;
      break;
    }
  }
  return !zero && Buffer.compare(x, N) < 0;
}

/**
 * The address (lowercase `0x…`) that signed the 32-byte `digest`, or `null` when no key can be
 * recovered (r is not on the curve, or the result is the point at infinity: viem throws there).
 */
export function recoverAddressFromDigest(digest: Uint8Array, sig: ParsedSignature): string | null {
  let publicKey: Uint8Array | null;
  try {
    publicKey = recover(digest, sig.rs, sig.recoveryId, false);
  } catch {
    // tiny-secp256k1 throws "Expected Signature" when r is not an x coordinate on the curve.
    return null;
  }
  return publicKey ? addressOfPublicKey(publicKey) : null;
}

/** Last 20 bytes of keccak256 of the 64-byte uncompressed key (without its 0x04 prefix). */
export function addressOfPublicKey(uncompressed: Uint8Array): string {
  const hash = keccak256(uncompressed.subarray(1), 'bytes');
  return `0x${Buffer.from(hash.buffer, hash.byteOffset + 12, 20).toString('hex')}`;
}

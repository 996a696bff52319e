import dns from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';

/**
 * Server-side request forgery guard: the service only calls URLs that lead to the public
 * internet (agents' pages, callbacks), never to itself, the private network or the cloud
 * metadata endpoint.
 * - `assertPublicUrl` checks the scheme and every address the host resolves to (clear errors
 *   at registration and task creation);
 * - `resolvePublicTarget` does the same check and returns the addresses that passed it, and
 *   `pinnedLookup` hands exactly those addresses to node:http(s) at connect time, so a name that
 *   resolves differently the second time (DNS rebinding) is never asked again. Every outbound
 *   request goes through `src/net/outbound.ts`, which uses both.
 */
export type UnsafeUrlReason = 'invalid_url' | 'scheme' | 'credentials' | 'private_address' | 'unresolvable';

export class UnsafeUrlError extends Error {
  readonly reason: UnsafeUrlReason;

  constructor(reason: UnsafeUrlReason, message: string) {
    super(message);
    this.name = 'UnsafeUrlError';
    this.reason = reason;
  }
}

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Resolves a host name to all its addresses (injectable: tests use a scripted one). */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export interface PublicUrlOptions {
  /** Skips the address checks (scheme checks stay): development and tests only. */
  allowPrivate: boolean;
  /** Resolves a host name to all its addresses; default `dns.promises.lookup(host, {all: true})`. */
  lookup?: Resolver;
}

// ---------------------------------------------------------------- address classification

/** [first address, prefix length] of every IPv4 block that is not the public internet. */
const NON_PUBLIC_V4: ReadonlyArray<readonly [string, number]> = [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local, including the metadata endpoint 169.254.169.254
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation (TEST-NET-1)
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation (TEST-NET-2)
  ['203.0.113.0', 24], // documentation (TEST-NET-3)
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, including the broadcast 255.255.255.255
];

function v4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
}

function inV4Block(value: number, base: string, prefix: number): boolean {
  const size = 2 ** (32 - prefix);
  const start = v4ToInt(base);
  return value >= start && value < start + size;
}

function isPublicV4(value: number): boolean {
  return !NON_PUBLIC_V4.some(([base, prefix]) => inV4Block(value, base, prefix));
}

/** The eight 16-bit groups of a valid IPv6 address (an embedded dotted IPv4 tail included). */
function v6Groups(ip: string): number[] {
  let text = ip;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = v4ToInt(tail);
    text = `${text.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const first = parse(head);
  if (rest === undefined) return first;
  const last = parse(rest);
  return [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last];
}

function embeddedV4(high: number, low: number): number {
  return high * 0x10000 + low;
}

function isPublicV6(g: number[]): boolean {
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g;
  const upper80Zero = g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0;
  // ::ffff:a.b.c.d (IPv4-mapped): judged as the IPv4 address it carries
  if (upper80Zero && g5 === 0xffff) return isPublicV4(embeddedV4(g6, g7));
  // 64:ff9b::a.b.c.d (NAT64 well-known prefix): judged as the IPv4 address it carries
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) {
    return isPublicV4(embeddedV4(g6, g7));
  }
  // 2002:aabb:ccdd::/48 (6to4): judged as the IPv4 address it carries
  if (g0 === 0x2002) return isPublicV4(embeddedV4(g1, g2));
  // Only global unicast (2000::/3) is public; this leaves out ::, ::1, the IPv4-compatible
  // ::/96, fc00::/7 (unique local), fe80::/10 (link-local), fec0::/10 and ff00::/8 (multicast).
  if ((g0 & 0xe000) !== 0x2000) return false;
  if (g0 === 0x2001 && g1 === 0x0db8) return false; // documentation
  if (g0 === 0x2001 && g1 === 0) return false; // Teredo: the real client address is hidden
  return true;
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/**
 * Whether an IP address (v4 or v6, `[v6]` accepted) belongs to the public internet.
 * Anything that is not a valid IP literal is not public.
 */
export function isPublicAddress(ip: string): boolean {
  const bare = stripBrackets(ip.trim());
  const withoutZone = bare.split('%')[0] ?? '';
  const family = isIP(withoutZone);
  if (family === 4) return isPublicV4(v4ToInt(withoutZone));
  if (family === 6) return isPublicV6(v6Groups(withoutZone));
  return false;
}

// ---------------------------------------------------------------- URLs

function parseUrl(input: string | URL): URL {
  try {
    return new URL(input);
  } catch {
    throw new UnsafeUrlError('invalid_url', 'not a valid URL');
  }
}

function assertHttpScheme(url: URL): void {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UnsafeUrlError('scheme', `only http and https URLs are allowed, not ${url.protocol}`);
  }
  if (url.username !== '' || url.password !== '') {
    throw new UnsafeUrlError('credentials', 'URLs with credentials are not allowed');
  }
  if (url.hostname === '') throw new UnsafeUrlError('invalid_url', 'the URL has no host');
}

/** The system resolver (getaddrinfo), every address in the order the system gives them. */
export async function systemResolver(hostname: string): Promise<ResolvedAddress[]> {
  return dns.promises.lookup(hostname, { all: true, verbatim: true });
}

async function resolveHost(hostname: string, lookup: PublicUrlOptions['lookup']): Promise<ResolvedAddress[]> {
  let addresses: ResolvedAddress[];
  try {
    addresses = await (lookup ?? systemResolver)(hostname);
  } catch {
    throw new UnsafeUrlError('unresolvable', `cannot resolve ${hostname}`);
  }
  // only IP addresses can be connected to (a resolver answering anything else is refused)
  const usable = addresses.filter((a) => isIP(a.address) !== 0);
  if (usable.length === 0) throw new UnsafeUrlError('unresolvable', `${hostname} has no address`);
  return usable.map((a) => ({ address: a.address, family: isIP(a.address) }));
}

function privateAddressError(host: string): UnsafeUrlError {
  return new UnsafeUrlError('private_address', `${host} is not a public internet address`);
}

/** Where a checked request may connect: the URL and, for a host name, the addresses that passed. */
export interface PublicTarget {
  url: URL;
  /** Empty when the host is an IP literal (nothing to resolve: the connection goes to it). */
  addresses: ResolvedAddress[];
}

/**
 * Parses the URL and refuses anything but http(s) to the public internet: an IP literal is
 * classified as is (no DNS), a name must resolve only to public addresses. Returns the addresses
 * that passed, to be connected to with `pinnedLookup` (never resolved again). With
 * `allowPrivate` the name is still resolved once and pinned, but any address passes.
 */
export async function resolvePublicTarget(input: string | URL, opts: PublicUrlOptions): Promise<PublicTarget> {
  const url = parseUrl(input);
  assertHttpScheme(url);
  const host = stripBrackets(url.hostname);
  if (isIP(host) !== 0) {
    if (!opts.allowPrivate && !isPublicAddress(host)) throw privateAddressError(host);
    return { url, addresses: [] };
  }
  const addresses = await resolveHost(host, opts.lookup);
  if (!opts.allowPrivate && addresses.some((a) => !isPublicAddress(a.address))) throw privateAddressError(host);
  return { url, addresses };
}

/**
 * Parses the URL and refuses anything but http(s) to the public internet (see
 * `resolvePublicTarget`). For validation at registration and task creation; a request must not
 * connect on the strength of this check alone: use `src/net/outbound.ts`.
 */
export async function assertPublicUrl(input: string | URL, opts: PublicUrlOptions): Promise<URL> {
  const url = parseUrl(input);
  assertHttpScheme(url);
  if (opts.allowPrivate) return url;
  return (await resolvePublicTarget(url, opts)).url;
}

/**
 * A `lookup` for node:http(s) request options (or net.connect) that answers only the given,
 * already checked addresses: the connection goes to an address that passed the check, whatever
 * the DNS says by then. IP literals never reach a lookup.
 */
export function pinnedLookup(hostname: string, addresses: readonly ResolvedAddress[]): LookupFunction {
  return (requested, options, callback) => {
    const family = options.family === 4 || options.family === 'IPv4' ? 4 : options.family === 6 || options.family === 'IPv6' ? 6 : 0;
    const usable = requested.toLowerCase() === hostname.toLowerCase() ? addresses.filter((a) => family === 0 || a.family === family) : [];
    const first = usable[0];
    if (!first) {
      const err = new UnsafeUrlError('unresolvable', `${requested} has no checked address`) as UnsafeUrlError & NodeJS.ErrnoException;
      return callback(err, '');
    }
    if (options.all) return callback(null, usable.map((a) => ({ address: a.address, family: a.family })));
    return callback(null, first.address, first.family);
  };
}

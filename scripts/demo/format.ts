/** Small text helpers of the demo's output: USDC amounts, short ids, tables. */

/** Atomic USDC (6 decimals) as "1.005", "0.001", "10000.000": at least three decimals, no trailing noise. */
export function usdc(atomic: bigint): string {
  const negative = atomic < 0n;
  const abs = negative ? -atomic : atomic;
  const whole = abs / 1_000_000n;
  let frac = (abs % 1_000_000n).toString().padStart(6, '0').replace(/0+$/, '');
  if (frac.length < 3) frac = frac.padEnd(3, '0');
  return `${negative ? '-' : ''}${whole}.${frac}`;
}

/** A signed change: "+0.975", "-3.057", "±0.000". */
export function delta(atomic: bigint): string {
  if (atomic === 0n) return '±0.000';
  return atomic > 0n ? `+${usdc(atomic)}` : usdc(atomic);
}

/** 0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65 → 0x15d3…6A65 */
export function shortHex(hex: string | null | undefined): string {
  if (!hex) return '—';
  return hex.length > 12 ? `${hex.slice(0, 6)}…${hex.slice(-4)}` : hex;
}

/** Cuts a text to `max` characters on one line. */
export function truncate(text: string, max: number): string {
  const oneLine = text.replace(/\s+/g, ' ').trim();
  return oneLine.length > max ? `${oneLine.slice(0, Math.max(0, max - 1))}…` : oneLine;
}

export type Align = 'left' | 'right';

/** A plain-text table: header row, a rule, the rows, optionally a rule and a footer row. */
export function table(header: string[], rows: string[][], opts: { align?: Align[]; footer?: string[]; indent?: string } = {}): string[] {
  const all = [header, ...rows, ...(opts.footer ? [opts.footer] : [])];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const indent = opts.indent ?? '  ';
  const line = (r: string[]) =>
    indent +
    r
      .map((cell, i) => (opts.align?.[i] === 'right' ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const rule = indent + widths.map((w) => '─'.repeat(w)).join('  ');
  return [line(header), rule, ...rows.map(line), ...(opts.footer ? [rule, line(opts.footer)] : [])];
}

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

/** Splits a text into lines of at most `width` characters, at spaces (a longer word gets a line of its own). */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.replace(/\s+/g, ' ').trim().split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
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

/** A result's content as one line: text as is, a data URL as its type and size, anything else as JSON. */
export function displayContent(result: { type: string; content: unknown }): string {
  const { content } = result;
  if (typeof content === 'string') {
    const dataUrl = /^data:([^;,]+)[;,]/.exec(content);
    if (dataUrl) return `${dataUrl[1]} data URL, ${content.length} chars`;
    return content;
  }
  return JSON.stringify(content);
}

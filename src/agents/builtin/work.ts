import { createHash } from 'node:crypto';

/**
 * The work of the built-in demo agents: pure functions of the brief (description and
 * requirements), so the same task always gets the same result, byte for byte, and therefore the
 * same `result_hash`. Nothing here reads a clock, a random source or the network.
 */

export interface WorkInput {
  description: string;
  requirements: unknown;
}

/** The `result` object a webhook agent answers with (src/tasks/schemas.ts ResultContent). */
export interface WorkResult {
  type: 'text' | 'image' | 'file' | 'structured';
  content: unknown;
  metadata: { tokens_used: number | null; model: string | null; duration_seconds: number | null; [extra: string]: unknown };
}

// ------------------------------------------------------------------------------ helpers

/** Deterministic bytes of a text (a seed for the choices an agent makes). */
function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** A string field of the requirements object, if the client sent one. */
export function requirement(requirements: unknown, key: string): string | undefined {
  if (requirements === null || typeof requirements !== 'object' || Array.isArray(requirements)) return undefined;
  const value = (requirements as Record<string, unknown>)[key];
  return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
}

function words(text: string): string[] {
  return text.toLowerCase().match(/[a-z0-9][a-z0-9'-]*/g) ?? [];
}

/** Words that say nothing about a topic (skipped when picking keywords). */
const STOP_WORDS = new Set(
  (
    'a an and are as at be but by for from has have how i in into is it its of on or our that the their them this to was ' +
    'we were what when where which who why will with you your about write generate create make give me please some image ' +
    'copy text summary summarize summarise research brief short long one two three'
  ).split(' '),
);

/** The most frequent meaningful words of a text, ties broken by first appearance. */
export function keywords(text: string, n: number): string[] {
  const counts = new Map<string, { count: number; first: number }>();
  words(text).forEach((w, i) => {
    if (w.length < 3 || STOP_WORDS.has(w)) return;
    const seen = counts.get(w);
    if (seen) seen.count += 1;
    else counts.set(w, { count: 1, first: i });
  });
  return [...counts.entries()]
    .sort(([, a], [, b]) => b.count - a.count || a.first - b.first)
    .slice(0, n)
    .map(([w]) => w);
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The subject of a brief: its `topic`/`product` requirement, else its description without a trailing period. */
function subjectOf(input: WorkInput): string {
  return requirement(input.requirements, 'topic') ?? requirement(input.requirements, 'product') ?? input.description.trim().replace(/[.!?]+$/, '');
}

function xmlEscape(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

// ---------------------------------------------------------------------- image (SVG)

const IMAGE_WIDTH = 512;
const IMAGE_HEIGHT = 320;

/** An SVG picture of the brief: a gradient sky, shapes placed by the brief's hash, its title. */
export function svgFor(prompt: string): string {
  const d = digest(prompt);
  const hue = (d[0]! * 360) / 256;
  const hue2 = (hue + 40 + d[1]! / 4) % 360;
  const shapes: string[] = [];
  for (let i = 0; i < 6; i++) {
    const x = Math.round((d[2 + i * 3]! / 255) * IMAGE_WIDTH);
    const y = Math.round((d[3 + i * 3]! / 255) * (IMAGE_HEIGHT - 80));
    const r = 14 + (d[4 + i * 3]! % 50);
    const shapeHue = Math.round((hue + i * 47) % 360);
    shapes.push(
      i % 2 === 0
        ? `<circle cx="${x}" cy="${y}" r="${r}" fill="hsl(${shapeHue},75%,60%)" fill-opacity="0.75"/>`
        : `<rect x="${x - r}" y="${y - r}" width="${2 * r}" height="${2 * r}" rx="8" fill="hsl(${shapeHue},65%,50%)" fill-opacity="0.6"/>`,
    );
  }
  const title = xmlEscape(truncate(prompt, 48));
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${IMAGE_WIDTH}" height="${IMAGE_HEIGHT}" viewBox="0 0 ${IMAGE_WIDTH} ${IMAGE_HEIGHT}">` +
    `<defs><linearGradient id="sky" x1="0" y1="0" x2="0" y2="1">` +
    `<stop offset="0" stop-color="hsl(${Math.round(hue)},70%,35%)"/><stop offset="1" stop-color="hsl(${Math.round(hue2)},70%,65%)"/>` +
    `</linearGradient></defs>` +
    `<rect width="${IMAGE_WIDTH}" height="${IMAGE_HEIGHT}" fill="url(#sky)"/>` +
    shapes.join('') +
    `<rect y="${IMAGE_HEIGHT - 64}" width="${IMAGE_WIDTH}" height="64" fill="black" fill-opacity="0.35"/>` +
    `<text x="${IMAGE_WIDTH / 2}" y="${IMAGE_HEIGHT - 26}" font-family="sans-serif" font-size="22" fill="white" text-anchor="middle">${title}</text>` +
    `</svg>`
  );
}

export function generateImage(input: WorkInput): WorkResult {
  const prompt = requirement(input.requirements, 'prompt') ?? input.description;
  const svg = svgFor(prompt);
  return {
    type: 'image',
    content: `data:image/svg+xml;base64,${Buffer.from(svg, 'utf8').toString('base64')}`,
    metadata: { tokens_used: null, model: 'builtin-svg-painter-1', duration_seconds: null, format: 'svg', mime_type: 'image/svg+xml', width: IMAGE_WIDTH, height: IMAGE_HEIGHT },
  };
}

// ------------------------------------------------------------------------- copywriting

const HEADLINES = [
  (s: string) => `${s}: made for the way you work.`,
  (s: string) => `Meet ${s}. Less effort, more done.`,
  (s: string) => `${s}, without the compromise.`,
  (s: string) => `Say hello to ${s}.`,
];
const CALLS_TO_ACTION = ['Try it today.', 'Get started in minutes.', 'See it for yourself.', 'Join the first wave.'];

export function writeCopy(input: WorkInput): WorkResult {
  const subject = subjectOf(input);
  const d = digest(`${input.description}\n${JSON.stringify(input.requirements ?? null)}`);
  const [first, second, third] = keywords(subject, 3);
  const headline = HEADLINES[d[0]! % HEADLINES.length]!(capitalize(truncate(subject, 60)));
  const benefits = [first, second, third].filter((w): w is string => w !== undefined);
  const body =
    benefits.length > 0
      ? `Built around ${benefits.join(', ')}, it does the hard part for you so you can focus on what matters.`
      : 'It does the hard part for you so you can focus on what matters.';
  const text = [headline, body, CALLS_TO_ACTION[d[1]! % CALLS_TO_ACTION.length]!].join('\n\n');
  return {
    type: 'text',
    content: text,
    metadata: { tokens_used: words(text).length, model: 'builtin-copywriter-1', duration_seconds: null },
  };
}

// ------------------------------------------------------------------------- summarizing

function sentences(text: string): string[] {
  return (text.replace(/\s+/g, ' ').match(/[^.!?]+[.!?]*/g) ?? []).map((s) => s.trim()).filter((s) => s.length > 0);
}

/**
 * Extractive summary of `requirements.text` (else the description): the sentences that carry the
 * text's most frequent words, in their original order.
 */
export function summarize(input: WorkInput): WorkResult {
  const source = requirement(input.requirements, 'text') ?? input.description;
  const all = sentences(source);
  const top = new Set(keywords(source, 8));
  const scored = all.map((s, i) => ({ s, i, score: words(s).filter((w) => top.has(w)).length / Math.sqrt(1 + words(s).length) }));
  const keep = Math.min(3, Math.max(1, Math.ceil(all.length / 3)));
  const chosen = [...scored].sort((a, b) => b.score - a.score || a.i - b.i).slice(0, keep).sort((a, b) => a.i - b.i);
  const summary = chosen.map((c) => c.s).join(' ') || source.trim();
  return {
    type: 'structured',
    content: {
      summary,
      key_points: [...top].slice(0, 5),
      source_words: words(source).length,
      summary_words: words(summary).length,
    },
    metadata: { tokens_used: words(source).length + words(summary).length, model: 'builtin-summarizer-1', duration_seconds: null },
  };
}

// ---------------------------------------------------------------------------- research

const ANGLES = [
  ['Market', 'who needs it, how many of them, and what they use today'],
  ['Technology', 'what it takes to build and where the hard problems are'],
  ['Cost', 'what drives the price and where the margins are'],
  ['Risks', 'what could go wrong, and how likely it is'],
  ['Trends', 'what has changed recently and what is likely to change next'],
] as const;

/**
 * A research brief of the topic: key questions and findings by angle. Offline and deterministic:
 * it fetches nothing, says so in the result, and gives the same brief for the same topic.
 */
export function research(input: WorkInput): WorkResult {
  const topic = subjectOf(input);
  const d = digest(topic.toLowerCase());
  const terms = keywords(topic, 4);
  const focus = terms.length > 0 ? terms.join(', ') : topic;
  const start = d[0]! % ANGLES.length;
  const angles = [0, 1, 2].map((k) => ANGLES[(start + k) % ANGLES.length]!);
  return {
    type: 'structured',
    content: {
      topic,
      summary: `Three angles on ${truncate(topic, 80)}: ${angles.map(([a]) => a.toLowerCase()).join(', ')}; key terms: ${focus}.`,
      findings: angles.map(([angle, what], i) => ({
        angle,
        question: `${angle}: ${what}, for ${truncate(topic, 60)}?`,
        confidence: ['high', 'medium', 'low'][(d[1 + i]! % 3)]!,
      })),
      keywords: terms,
      next_steps: [`Collect primary sources on ${focus}`, 'Check each finding against two independent sources', 'Write up the answer with citations'],
      note: 'Built-in dev agent: deterministic and offline, no sources were fetched.',
    },
    metadata: { tokens_used: words(topic).length * 20, model: 'builtin-researcher-1', duration_seconds: null },
  };
}

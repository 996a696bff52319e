import { describe, expect, it } from 'vitest';
import { BUILTIN_AGENTS } from '../../src/agents/builtin/catalog.js';
import { generateImage, keywords, research, summarize, svgFor, writeCopy } from '../../src/agents/builtin/work.js';
import { ResultContent } from '../../src/tasks/schemas.js';
import { resultHash } from '../../src/tasks/result-hash.js';

/** The built-in demo agents' work: deterministic, valid results of the wire's ResultContent shape. */

const brief = (description: string, requirements: unknown = null) => ({ description, requirements });

describe('built-in agents’ work', () => {
  it('gives the same result (and result hash) for the same brief, and another for another brief', () => {
    for (const agent of BUILTIN_AGENTS) {
      const a = agent.work(brief('Launch the SunBeam solar lantern', { topic: 'solar lanterns for campers' }));
      const b = agent.work(brief('Launch the SunBeam solar lantern', { topic: 'solar lanterns for campers' }));
      expect(resultHash(a), agent.name).toBe(resultHash(b));
      expect(ResultContent.safeParse(a).success, agent.name).toBe(true);
      const other = agent.work(brief('Something else entirely: a bakery in Lyon', { topic: 'bread', text: 'Bread is good. Bakers rise early.' }));
      expect(resultHash(other), agent.name).not.toBe(resultHash(a));
    }
  });

  it('draws an SVG data URL with the prompt as its (escaped) title', () => {
    const result = generateImage(brief('Cats & <dogs>'));
    expect(result.type).toBe('image');
    const url = result.content as string;
    expect(url).toMatch(/^data:image\/svg\+xml;base64,/);
    const svg = Buffer.from(url.split(',')[1]!, 'base64').toString('utf8');
    expect(svg).toBe(svgFor('Cats & <dogs>'));
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg).toContain('Cats &amp; &lt;dogs&gt;');
    expect(svg).not.toContain('<dogs>');
    expect(generateImage(brief('x', { prompt: 'a red fox' })).content).not.toBe(generateImage(brief('x')).content);
  });

  it('writes copy about the subject, summarizes the given text, and researches the topic', () => {
    const copy = writeCopy(brief('Write copy', { product: 'SunBeam solar lantern' }));
    expect(copy.type).toBe('text');
    expect(copy.content).toContain('SunBeam solar lantern');

    const text =
      'Solar lanterns charge during the day. At night the lantern glows for twelve hours. ' +
      'Campers like lanterns that need no fuel. The weather was nice. Solar lanterns are cheap to run.';
    const summary = summarize(brief('Summarize this', { text })).content as { summary: string; key_points: string[] };
    expect(summary.summary.length).toBeLessThan(text.length);
    expect(text).toContain(summary.summary.split('. ')[0]!.replace(/\.$/, ''));
    expect(summary.key_points).toContain('lanterns');

    const report = research(brief('Research the market for solar lanterns')).content as { topic: string; findings: unknown[]; note: string };
    expect(report.topic).toBe('Research the market for solar lanterns');
    expect(report.findings).toHaveLength(3);
    expect(report.note).toMatch(/no sources were fetched/);
  });

  it('picks keywords by frequency, skipping filler words', () => {
    expect(keywords('the lantern and the lantern glow at night, glow', 2)).toEqual(['lantern', 'glow']);
  });
});

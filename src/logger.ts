import type { LoggerOptions } from 'pino';

/** Anything that can carry a key, a signature or a payment is redacted wherever it appears. */
export const redactPaths = [
  'req.headers.authorization',
  'req.headers["payment-signature"]',
  'req.headers["x-payment"]',
  'req.headers.cookie',
  'res.headers["payment-response"]',
  'headers.authorization',
  'headers["payment-signature"]',
  '*.privateKey',
  '*.private_key',
  '*.secret',
  '*.apiKey',
  '*.api_key',
  'privateKey',
  'secret',
];

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    redact: { paths: redactPaths, censor: '[redacted]' },
  };
}

import { describe, expect, it } from 'vitest';
import { serviceBaseUrl, signInDomain } from '../scripts/base-url.js';

/** The scripts (npm run pay:search) reach the service where README says: TASK_ESCROW_URL, BASE_URL, or PORT. */
describe('serviceBaseUrl', () => {
  it('defaults to http://127.0.0.1:3000, or the PORT npm start listens on', () => {
    expect(serviceBaseUrl({})).toBe('http://127.0.0.1:3000');
    expect(serviceBaseUrl({ PORT: '4100' })).toBe('http://127.0.0.1:4100');
  });

  it('takes TASK_ESCROW_URL first, then BASE_URL, without a trailing slash', () => {
    expect(serviceBaseUrl({ BASE_URL: 'http://127.0.0.1:4200/', PORT: '4100' })).toBe('http://127.0.0.1:4200');
    expect(serviceBaseUrl({ TASK_ESCROW_URL: 'https://escrow.example/api/', BASE_URL: 'http://127.0.0.1:4200' })).toBe('https://escrow.example/api');
    expect(serviceBaseUrl({ TASK_ESCROW_URL: ' ', BASE_URL: 'http://127.0.0.1:4200' })).toBe('http://127.0.0.1:4200');
  });

  it('refuses what is not an http(s) URL', () => {
    expect(() => serviceBaseUrl({ BASE_URL: 'localhost:3000' })).toThrow(/http/);
    expect(() => serviceBaseUrl({ BASE_URL: 'not a url' })).toThrow(/Not a URL/);
  });

  it('signs in for AUTH_DOMAIN when set, else the URL’s host', () => {
    expect(signInDomain('http://127.0.0.1:4100')).toBe('127.0.0.1:4100');
    expect(signInDomain('https://escrow.example/api', { AUTH_DOMAIN: 'escrow.example' })).toBe('escrow.example');
  });
});

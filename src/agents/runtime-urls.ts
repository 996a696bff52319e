import { AppError } from '../errors.js';
import { UnsafeUrlError, assertPublicUrl, type PublicUrlOptions } from '../net/ssrf.js';

/**
 * The URLs of an agent's runtime that the service will call (a webhook's `url`, a hosted LLM's
 * own `base_url`), checked at registration and update the way a task's `callback_url` is checked
 * at creation: outside dev mode they must lead to the public internet. The dispatcher checks
 * them again on every call (DNS may change); this check refuses them up front, with the field.
 */
export async function checkRuntimeUrls(runtime: Record<string, unknown>, opts: PublicUrlOptions): Promise<void> {
  if (runtime.kind === 'webhook' && typeof runtime.url === 'string') await checkUrl(runtime.url, 'runtime.url', opts);
  if (runtime.kind === 'hosted_llm' && typeof runtime.base_url === 'string') await checkUrl(runtime.base_url, 'runtime.base_url', opts);
}

async function checkUrl(url: string, param: string, opts: PublicUrlOptions): Promise<void> {
  try {
    await assertPublicUrl(url, opts);
  } catch (err) {
    if (err instanceof UnsafeUrlError) throw new AppError('validation_error', `${param} is refused: ${err.message}`, { param });
    throw err;
  }
}

import { index, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * Revoked session tokens (auth/session.ts owns this table). A session token is a signed JWT that
 * any process verifies on its own; revoking one stores its `jti` here until the token expires, and
 * every use of a token looks its `jti` up by primary key. To be re-exported from schema.ts.
 */

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const revokedSessions = pgTable(
  'revoked_sessions',
  {
    /** The token's `jti` (`sess_…`). */
    jti: text('jti').primaryKey(),
    /** The wallet the token was issued to (lowercase), for operators. */
    address: text('address').notNull(),
    /** The token's `exp`: after it (and the clock tolerance) the row may be purged. */
    expiresAt: ts('expires_at').notNull(),
    revokedAt: ts('revoked_at').notNull(),
  },
  (t) => [index('revoked_sessions_expiry_idx').on(t.expiresAt)],
);

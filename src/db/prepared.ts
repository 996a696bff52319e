import type { Db } from './client.js';

/**
 * A query built and prepared once per database (drizzle's `.prepare(name)`, its parameters
 * `sql.placeholder`s), for the hot paths: not built again per request. On Postgres it runs as a
 * named statement, parsed once per pooled connection; on PGlite drizzle keeps the built SQL text
 * (PGlite parses it per run: it has no named statements). A prepared query runs on the database
 * it was built on, never inside a transaction: callers in one use the query builder.
 *
 * `name` must be unique in the service: Postgres refuses one name for two texts on a connection.
 */
export function preparedQuery<Q>(build: (db: Db) => Q): (db: Db) => Q {
  const byDatabase = new WeakMap<Db, Q>();
  return (db) => {
    let query = byDatabase.get(db);
    if (query === undefined) byDatabase.set(db, (query = build(db)));
    return query;
  };
}

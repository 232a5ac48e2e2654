-- Retry state of certificate orders that belong to no domain (the base domain's
-- wildcard), kept across restarts so a restart or a crash loop does not order again
-- before the retry time and spend the CA's failed-validation budget: failures in a row,
-- when it is tried next, and the last failure in words. A domain's own state lives with
-- the domain (migration 0014). No row: nothing has failed since the last success.
CREATE TABLE certificate_orders (
    subject          TEXT PRIMARY KEY,
    attempts         INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    problem          TEXT NOT NULL
);

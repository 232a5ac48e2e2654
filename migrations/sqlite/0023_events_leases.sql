-- Which process holds a running job's lease: a process takes over another's job only once
-- its lease has expired, and at start only the jobs its own data dir held (the previous
-- run of this server died, the data-dir lock says so).
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;

-- The events table is the bus readers follow by cursor: by subject (a deployment, a
-- domain) and, for pruning, by age.
CREATE INDEX events_by_subject ON events (subject, id);
CREATE INDEX events_by_time ON events (created_at);

-- Loops that must run in one process at a time across every process on the database
-- (pruning, sweeps) hold a lease here by name while they run, and renew it.
CREATE TABLE singleton_leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    lease_until  INTEGER NOT NULL
);

-- The `berth serve` processes on this database, each with its last heartbeat: a replica
-- is live while its heartbeat is recent. The local target refuses deploys while more
-- than one is live (it runs apps on its own machine only).
CREATE TABLE replicas (
    id            TEXT PRIMARY KEY,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL
);

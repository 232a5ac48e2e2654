-- The `berth serve` processes on this database, each with its last heartbeat: a replica
-- is live while its heartbeat is recent. The local target refuses deploys while more
-- than one is live (it runs apps on its own machine only).
CREATE TABLE replicas (
    id            TEXT PRIMARY KEY,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);

-- Every committed event wakes the event bus's readers in every replica: a notification on
-- 'berth_events' is delivered at commit (and not at all on rollback). The payload is empty,
-- so a transaction that writes many events notifies once.
CREATE FUNCTION berth_notify_events() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('berth_events', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_events();

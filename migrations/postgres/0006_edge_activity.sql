-- When each replica's edge last served a request for an environment of a shared target
-- that another replica runs: the replica running it puts it to sleep only once no edge
-- has served it for its idle timeout. One row per environment and reporting replica.
CREATE TABLE edge_activity (
    environment_id   TEXT NOT NULL,
    replica_id       TEXT NOT NULL,
    last_request_at  BIGINT NOT NULL,
    PRIMARY KEY (environment_id, replica_id)
);

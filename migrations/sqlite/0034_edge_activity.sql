-- What each replica's edge sees of the environments of a shared target that another
-- replica runs: when it last served a request for one, and how many of its requests are
-- in flight (reported at `reported_at`). The replica running them puts an environment to
-- sleep only once no edge has served it for its idle timeout, and its autoscaler counts
-- every edge's requests in flight. One row per environment and reporting replica.
CREATE TABLE edge_activity (
    environment_id   TEXT NOT NULL,
    replica_id       TEXT NOT NULL,
    last_request_at  INTEGER NOT NULL,
    in_flight        INTEGER NOT NULL,
    reported_at      INTEGER NOT NULL,
    PRIMARY KEY (environment_id, replica_id)
);

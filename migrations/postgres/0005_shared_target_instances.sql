-- Values that belong to the installation (the database) rather than to one server's data
-- dir: `docker_owner`, the `berth.owner` label of its containers and images, the same for
-- every replica so that the next holder of a shared target's lease adopts them.
CREATE TABLE installation (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- The instances of shared targets (docker on an engine every replica reaches) as the
-- replica holding the target's lease runs them: the address every replica's edge routes
-- to and the state. At most one row per instance of a desired deployment.
CREATE TABLE shared_instances (
    deployment_id   TEXT NOT NULL,
    instance_index  BIGINT NOT NULL,
    target          TEXT NOT NULL,
    environment_id  TEXT NOT NULL,
    addr            TEXT,
    state           TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, instance_index)
);

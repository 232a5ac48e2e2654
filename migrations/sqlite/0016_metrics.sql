-- Traffic of each site+environment as the edge's tap counts it, in buckets of one
-- minute, one hour and one day (`resolution` in seconds). Minute buckets are written
-- every few seconds; an hour is recomputed from its minutes (a day from its hours) by the
-- rollup while any of them is not `rolled` into it yet, so a rollup run twice changes
-- nothing. Each resolution is pruned by its own age.
CREATE TABLE metrics_buckets (
    environment_id  TEXT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    resolution      INTEGER NOT NULL,
    start_ms        INTEGER NOT NULL,
    site_id         TEXT NOT NULL,
    requests        INTEGER NOT NULL,
    -- {"200": n, "404": n, ...}
    statuses        TEXT NOT NULL,
    bytes_out       INTEGER NOT NULL,
    static_files    INTEGER NOT NULL,
    proxied         INTEGER NOT NULL,
    not_modified    INTEGER NOT NULL,
    cold_starts     INTEGER NOT NULL,
    total_micros    INTEGER NOT NULL,
    -- Time to first byte: a log-bucketed sketch (1 % relative error), varint-encoded.
    first_byte      BLOB NOT NULL,
    -- Top path templates (space-saving, at most 100) and what the rest add up to.
    paths           TEXT NOT NULL,
    rolled          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (environment_id, resolution, start_ms)
) WITHOUT ROWID;

-- What the rollup still has to merge into the next resolution.
CREATE INDEX metrics_buckets_unrolled ON metrics_buckets (resolution, start_ms) WHERE rolled = 0;
-- What pruning removes: each resolution's oldest buckets.
CREATE INDEX metrics_buckets_by_age ON metrics_buckets (resolution, start_ms);

-- Resources: stores that outlive deployments, attached to a site (at most one in this
-- version). A `sqlite` resource is a disk image in the data dir (`resources/<id>.img`)
-- that the site's app instances see at `/data/<name>`. Deleting the site detaches the
-- resource (its data stays until the resource is deleted).
CREATE TABLE resources (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    size_mb     INTEGER NOT NULL,
    site_id     TEXT REFERENCES sites(id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX resources_by_site ON resources (site_id);

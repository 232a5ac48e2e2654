-- Each site's build steps and apps run as a host uid of their own: the first uid of the
-- configured range plus `seq`. Rows outlive their site (no foreign key), so a uid is
-- never handed to a second site.
CREATE TABLE sandbox_users (
    seq      INTEGER PRIMARY KEY,
    site_id  TEXT NOT NULL UNIQUE
);

-- The number of sites of each org, kept by triggers in the same transaction as the change:
-- a page of HOSTING_LIST_SITES reports `total` by reading one row instead of counting the
-- org's sites (which read its whole index, a cost that grew with every site).
CREATE TABLE org_site_counts (
    org_id  TEXT PRIMARY KEY,
    sites   INTEGER NOT NULL
);

INSERT INTO org_site_counts (org_id, sites) SELECT org_id, COUNT(*) FROM sites GROUP BY org_id;

CREATE TRIGGER org_site_counts_insert AFTER INSERT ON sites BEGIN
    INSERT INTO org_site_counts (org_id, sites) VALUES (NEW.org_id, 1)
        ON CONFLICT (org_id) DO UPDATE SET sites = sites + 1;
END;

CREATE TRIGGER org_site_counts_delete AFTER DELETE ON sites BEGIN
    UPDATE org_site_counts SET sites = sites - 1 WHERE org_id = OLD.org_id;
END;

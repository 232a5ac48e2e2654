-- Site names are hostnames shared by every org: creating a site looks its name up across
-- orgs, which without this index reads every site (creation slowed as sites grew).
CREATE INDEX sites_by_name ON sites (name);

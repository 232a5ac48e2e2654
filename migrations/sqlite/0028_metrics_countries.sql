-- Requests of each bucket by client country, when a GeoIP database is configured
-- (`--geoip-db`): {"k": {"US": n, "unknown": n, ...}, "o": n} with at most 50 countries
-- kept apart, the rest added up in "o". Buckets written before this column existed, or
-- without a database, hold none.
ALTER TABLE metrics_buckets ADD COLUMN countries TEXT NOT NULL DEFAULT '{}';

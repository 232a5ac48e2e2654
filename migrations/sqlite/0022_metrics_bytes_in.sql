-- Request body bytes the edge received for each bucket's site+environment (as the
-- requests' Content-Length declared them), beside the bytes it sent. Buckets written
-- before this column existed count 0.
ALTER TABLE metrics_buckets ADD COLUMN bytes_in INTEGER NOT NULL DEFAULT 0;

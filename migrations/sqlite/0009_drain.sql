-- How long, in seconds, an instance that no route points at any more (after a deploy,
-- promote, rollback or scale-in) may finish its requests before it is stopped. NULL
-- means the default (30 s).
ALTER TABLE sites ADD COLUMN drain_seconds INTEGER;

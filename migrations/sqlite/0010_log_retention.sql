-- Log retention per environment by size and age. Each line records its environment and
-- what it costs (its text's bytes plus a fixed amount for its record), so the writer can
-- remove an environment's oldest lines, across all its deployments, through one index;
-- `log_usage` keeps each environment's running total, so knowing whether it is over its
-- bound costs one row, not a sum over its lines.
ALTER TABLE deployment_logs ADD COLUMN environment_id TEXT;
ALTER TABLE deployment_logs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;

UPDATE deployment_logs SET
    environment_id = (SELECT environment_id FROM deployments WHERE deployments.id = deployment_logs.deployment_id),
    bytes = length(CAST(line AS BLOB)) + 256;

-- Oldest lines of an environment by kind (runtime ones go first), with their cost.
CREATE INDEX deployment_logs_by_environment ON deployment_logs (environment_id, kind, id, bytes);

CREATE TABLE log_usage (
    environment_id  TEXT PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,
    bytes           INTEGER NOT NULL
);

INSERT INTO log_usage (environment_id, bytes)
    SELECT environment_id, SUM(bytes) FROM deployment_logs
    WHERE environment_id IN (SELECT id FROM environments)
    GROUP BY environment_id;

-- A deployment removed (pruning, a promotion's unused copy) takes its lines with it
-- through the foreign key; its environment's total loses what they cost. A removed
-- environment loses its total row through its own foreign key.
CREATE TRIGGER deployment_logs_leave_usage BEFORE DELETE ON deployments
BEGIN
    UPDATE log_usage
       SET bytes = MAX(0, bytes - (SELECT COALESCE(SUM(bytes), 0) FROM deployment_logs WHERE deployment_id = OLD.id))
     WHERE environment_id = OLD.environment_id;
END;

-- A deployment moved to another environment (its first one deleted while another
-- serves it) takes its lines and what they cost along.
CREATE TRIGGER deployment_logs_follow_environment AFTER UPDATE OF environment_id ON deployments
WHEN OLD.environment_id IS NOT NEW.environment_id
BEGIN
    UPDATE log_usage
       SET bytes = MAX(0, bytes - (SELECT COALESCE(SUM(bytes), 0) FROM deployment_logs WHERE deployment_id = NEW.id))
     WHERE environment_id = OLD.environment_id;
    INSERT INTO log_usage (environment_id, bytes)
        SELECT NEW.environment_id, COALESCE(SUM(bytes), 0) FROM deployment_logs WHERE deployment_id = NEW.id
        ON CONFLICT (environment_id) DO UPDATE SET bytes = bytes + excluded.bytes;
    UPDATE deployment_logs SET environment_id = NEW.environment_id WHERE deployment_id = NEW.id;
END;

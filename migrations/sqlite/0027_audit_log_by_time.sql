-- Audit entries are pruned by age (400 days): find the old ones without a scan.
CREATE INDEX audit_by_time ON audit_log (created_at);

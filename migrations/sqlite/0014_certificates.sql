-- Certificates. `acme_accounts` holds berth's one account per ACME directory, its
-- credentials (with the account's private key) sealed. `certificates` holds one
-- certificate per subject (a domain's name, or `*.<base domain>`), chain and key sealed;
-- `renew_at` is when renewal starts (a third of the lifetime before expiry, or the CA's
-- renewal window). A domain's issuance state lives with it: `attempts` failed in a row,
-- `next_attempt_at` (the retry schedule), `problem` (JSON: message and the CA's problem
-- document), and `hsts` (send Strict-Transport-Security for it).
CREATE TABLE acme_accounts (
    directory    TEXT PRIMARY KEY,
    credentials  TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE certificates (
    id          TEXT PRIMARY KEY,
    subject     TEXT NOT NULL UNIQUE,
    domain_id   TEXT REFERENCES domains(id) ON DELETE CASCADE,
    names       TEXT NOT NULL,
    chain       TEXT NOT NULL,
    key         TEXT NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    renew_at    INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL
);
CREATE INDEX certificates_domain ON certificates (domain_id);

ALTER TABLE domains ADD COLUMN hsts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN next_attempt_at INTEGER;
ALTER TABLE domains ADD COLUMN problem TEXT;

-- HTTP-01 and TLS-ALPN-01 challenges of the orders in flight, so that every replica's
-- edge answers them (the CA's validation may reach any replica behind a load balancer).
-- Only what the edge serves is kept: the kind, the name, the token and the key
-- authorization (public by design); nothing of the account. Rows expire and are swept.
CREATE TABLE acme_challenges (
    kind               TEXT NOT NULL,
    name               TEXT NOT NULL,
    token              TEXT NOT NULL,
    key_authorization  TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    PRIMARY KEY (kind, name, token)
);
CREATE INDEX acme_challenges_by_expiry ON acme_challenges (expires_at);

-- The newest event whose challenges each replica's edge has applied: the ordering replica
-- tells the CA a challenge is ready once every live replica has caught up with its event.
ALTER TABLE replicas ADD COLUMN challenges_applied BIGINT NOT NULL DEFAULT 0;

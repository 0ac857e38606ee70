-- The journal on PostgreSQL, schema version 2: leadership (hitl_vault.journal.pg_lease).
-- `lease`: one row per vault saying which term leads and until when, by the server's clock.
-- `term` is its key: a renewal moves `expires` only, which never waits for the owner's
-- writes (they hold FOR KEY SHARE on the row), while an election moves `term`, which waits
-- for every owner's write under way and makes each later one of the old term fail.
CREATE TABLE lease (
    one BOOLEAN NOT NULL UNIQUE DEFAULT TRUE CHECK (one),
    term BIGINT PRIMARY KEY,
    holder vtext NOT NULL,
    taken TIMESTAMPTZ NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);
INSERT INTO lease (term, holder, taken, expires) VALUES (0, '', now(), now());
-- The term that claimed a request (approved -> executing): only that term records how its
-- action went, unless a later term closes the claim after a takeover.
ALTER TABLE requests ADD COLUMN claimed_term BIGINT;

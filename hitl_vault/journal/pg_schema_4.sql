-- The journal on PostgreSQL, schema version 4: the credential each entry was asked or decided
-- with. entries.credential: `token ci-bot (id ...)` for a token, `session alice`, `link alice`
-- or `socket alice` (the person and the channel) for a step taken through the service, NULL
-- otherwise. An entry with one is of chain version 3: its hash covers the uid, the actor and
-- the credential too.
ALTER TABLE entries ADD COLUMN credential vtext;

-- The journal on PostgreSQL, schema version 3: who recorded each entry across hosts.
-- entries.actor: `host/user` (the host's name and the OS user's) of the process that
-- recorded it, NULL in entries of chain version 1 (written before it was recorded). An
-- entry with an actor is of chain version 2: its hash covers the uid and the actor too.
ALTER TABLE entries ADD COLUMN actor vtext;

-- The journal: one row per request, and an append-only hash chain of its transitions.
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    risk TEXT NOT NULL,
    rule TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    params TEXT NOT NULL,
    params_sha_created TEXT NOT NULL,
    params_sha_approved TEXT,
    decided_by TEXT,
    reason TEXT,
    decided_at TEXT,
    executed_at TEXT,
    result TEXT,
    error TEXT,
    path TEXT,
    carried_by_requester INTEGER NOT NULL DEFAULT 0,
    -- What the submitter's Python rules required (JSON: approvers, fixed): enforced by
    -- every process, also those that do not run those rules.
    pinned TEXT,
    -- The params as asked for (JSON), kept when a human edits them while pending.
    params_created TEXT,
    -- What the requester said about it for the approver, as given (NULL: nothing said).
    context TEXT,
    -- When the request escalates if nobody decided it (escalate_after), NULL once it did.
    escalate_at TEXT,
    -- The failed or timed-out request this one retries (`hitl-vault retry`), if any.
    retry_of TEXT,
    -- What the requester put forward beside the params (JSON: reasoning, confidence,
    -- alternatives, risk_factors, diff, diff_by), NULL when nothing was put forward.
    proposal TEXT,
    -- SHA-256 of the note's bytes when they last matched this row, cleared by every
    -- transition. A rescan skips a note whose bytes still have it.
    note_sha TEXT,
    -- Asked through the service: the id of the agent token that asked (NULL: asked any other
    -- way, by the CLI or the Inbox, say: an agent sees the requests its name's tokens asked,
    -- never one that only names it), and the session and client the agent said it asked
    -- from (NULL: none said). No semicolon in a comment here: the file is split on them.
    credential TEXT,
    session TEXT,
    client TEXT
);
CREATE INDEX IF NOT EXISTS requests_status_expires ON requests (status, expires);
-- entries.uid: the real user id of the process that recorded the entry (NULL where the
-- system has none, and in entries older than the column), part of the hash when present.
-- entries.actor: who recorded it across hosts, `host/user` (the host's name and the OS
-- user's), NULL in entries of chain version 1 (written before it was recorded). An entry
-- with an actor is of chain version 2: its hash covers the uid and the actor too.
-- entries.credential: the credential the step was asked or decided with through the service
-- (`token ci-bot (id ...)`, `session alice`, `link alice`), NULL otherwise. An entry with
-- one is of chain version 3: its hash covers the uid, the actor and the credential.
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL,
    params_sha TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    uid INTEGER,
    actor TEXT,
    credential TEXT
);
CREATE INDEX IF NOT EXISTS entries_request ON entries (request_id, seq);
CREATE TABLE IF NOT EXISTS proposals (
    key TEXT PRIMARY KEY,
    request_id TEXT NOT NULL
);
-- Every version of hitl-vault.yaml that came into force: when, its hash, what changed.
CREATE TABLE IF NOT EXISTS policy_changes (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    sha TEXT NOT NULL,
    summary TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attention (
    path TEXT PRIMARY KEY,
    request_id TEXT,
    message TEXT NOT NULL,
    since TEXT NOT NULL
);
-- Notifications: each recorded before it is sent, marked sent after (an outbox). One row
-- per request, event and target (the URL as written, secrets never resolved here).
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    event TEXT NOT NULL,
    target TEXT NOT NULL,
    created TEXT NOT NULL,
    due TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at TEXT,
    given_up_at TEXT,
    UNIQUE (request_id, event, target)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sent_at, given_up_at, due);
-- How far a reader of the entries has got (the notifier: which transitions it recorded).
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
-- People, credentials and the service's settings: set only through the CLI by the service's
-- owner, never in the synced vault. Names are kept as written, `key` is the name as compared
-- (identity.same_name).
CREATE TABLE IF NOT EXISTS people (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    uids TEXT NOT NULL,
    notify TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    changed TEXT NOT NULL
);
-- A credential keeps the SHA-256 of its secret only. last_used is outside every chain: using
-- a credential logs nothing.
CREATE TABLE IF NOT EXISTS credentials (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_sha TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    actions TEXT,
    revoked TEXT,
    last_used TEXT
);
CREATE INDEX IF NOT EXISTS credentials_key ON credentials (key);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    changed TEXT NOT NULL
);
-- The service log: every change to people, credentials and settings, and summaries of failed
-- sign-ins, in a hash chain of its own (AUTOINCREMENT: a removed newest entry shows).
CREATE TABLE IF NOT EXISTS service_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    by TEXT NOT NULL,
    event TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    uid INTEGER
);
-- "Always" allows (approve --always): the same call allowed again until `until`, never kept
-- in the synced vault: each change is in the service log.
CREATE TABLE IF NOT EXISTS allows (
    name TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    params TEXT NOT NULL,
    by TEXT NOT NULL,
    created TEXT NOT NULL,
    until TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prefix INTEGER NOT NULL DEFAULT 0,
    session TEXT,
    revoked TEXT,
    cwd TEXT,     -- the folder the approved call was made in (NULL: it named none)
    server TEXT   -- the MCP server it went to (NULL: none)
);
-- The web inbox: one-time sign-in links (hitl-vault token login) and signed-in sessions, each
-- kept as the SHA-256 of its secret only (key), never in the synced vault. Making a link,
-- using it, signing in and a session's end are in the service log.
CREATE TABLE IF NOT EXISTS sign_in_links (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    used TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    person TEXT NOT NULL,  -- the name as compared (identity.same_name)
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    how TEXT NOT NULL,
    client TEXT NOT NULL,
    ended TEXT,
    credential TEXT NOT NULL DEFAULT ''  -- the token it was opened with ('': a sign-in link)
);
CREATE INDEX IF NOT EXISTS sessions_person ON sessions (person, ended);
-- Decision links (hitl_vault.access.links): the one key that signs them, made with the
-- store (or when this version first opens a store made before), never logged, never in a
-- chain. And the links spent, by a hash of the link (never the link itself), each written
-- in the transaction of the decision it made, so a link decides once.
CREATE TABLE IF NOT EXISTS link_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS spent_links (
    link TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    at TEXT NOT NULL
);

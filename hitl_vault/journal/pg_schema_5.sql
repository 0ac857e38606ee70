-- The journal on PostgreSQL, schema version 5: an index for the questions every step of the
-- leader's daemon asks, the next escalation and those due, which otherwise read every
-- pending request.
CREATE INDEX IF NOT EXISTS requests_status_escalate ON requests (status, escalate_at);

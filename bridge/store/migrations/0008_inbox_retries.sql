-- Failed events are retried with exponential backoff: not before next_attempt_at (ms).
ALTER TABLE inbox ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
-- Events already handled, by event id: one delivered again (in another transaction) has its effects once.
CREATE TABLE handled_events (
    event_id   TEXT PRIMARY KEY,
    handled_at BIGINT NOT NULL
);
CREATE INDEX handled_events_at ON handled_events (handled_at);
CREATE INDEX transactions_received ON transactions (received_at);

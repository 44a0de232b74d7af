-- One writer at a time across processes: a named lease with a holder and an expiry (ms).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

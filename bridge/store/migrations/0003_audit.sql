-- Append-only audit log: each entry's MAC chains to the previous one (tamper-evident).
CREATE TABLE audit (
    seq  BIGINT PRIMARY KEY,
    ts   BIGINT NOT NULL,
    body TEXT NOT NULL,
    mac  TEXT NOT NULL
);

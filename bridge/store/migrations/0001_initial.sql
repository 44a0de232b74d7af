-- Transactions received from the homeserver: a txn id is processed at most once, across restarts.
CREATE TABLE transactions (
    txn_id      TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL,
    event_count INTEGER NOT NULL
);
-- Durable inbox: events are written here before the transaction is acknowledged, and leave
-- only once handled (or are kept as dead letters after too many failures).
CREATE TABLE inbox (
    txn_id     TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    event_json TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    dead       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (txn_id, idx)
);
-- Small key/value facts (the bot's device id, the last directory counts…).
CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Managed rooms: stable room key -> room id and alias.
CREATE TABLE rooms (
    room_key   TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL UNIQUE,
    alias      TEXT NOT NULL,
    template   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

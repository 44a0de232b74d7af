-- Entries recorded at most once (a moderation decision, a removal), by a key of what they are about:
-- the same event handled again, after a failed action or a crash, is not put on record twice.
CREATE TABLE audit_once (
    once_key TEXT PRIMARY KEY,
    seq      BIGINT NOT NULL
);
CREATE INDEX audit_once_seq ON audit_once (seq);

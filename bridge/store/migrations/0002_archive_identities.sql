-- Rooms the bridge archived (no longer in the directory) are kept, marked, never re-planned.
ALTER TABLE rooms ADD COLUMN archived_at BIGINT;
-- The Matrix id the bridge gave each directory person: people keep their account across imports.
CREATE TABLE identities (
    person_id TEXT PRIMARY KEY,
    user_id   TEXT NOT NULL
);

-- Accounts the bridge created (only those may be deactivated by it).
CREATE TABLE provisioned (
    user_id   TEXT PRIMARY KEY,
    person_id TEXT NOT NULL
);
-- People gone from the directory, and since when: erased after the grace period.
CREATE TABLE leavers (
    person_id TEXT PRIMARY KEY,
    left_at   BIGINT NOT NULL
);

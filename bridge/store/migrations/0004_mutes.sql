-- Mutes with an expiry, so an unmute is honoured after a restart.
CREATE TABLE mutes (
    room_id  TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

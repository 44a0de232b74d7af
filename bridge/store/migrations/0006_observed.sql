-- What the homeserver held for each managed room at the last observation (the state events the
-- planner reads, reduced: no display names or avatars), kept with a sync token so that the next
-- sync re-reads only rooms whose state changed since.
CREATE TABLE observed_rooms (
    room_id    TEXT PRIMARY KEY,
    state_json TEXT NOT NULL
);

"""The store's values that name people by Matrix id, besides the tables: one list, so that an
erasure (bridge/erasure.py) forgets a person in each of them."""

from __future__ import annotations

ABSENCES_KEY = "absences"  # {Matrix id: {"until": "YYYY-MM-DD", "message": "..."}}
ANNOUNCEMENTS_KEY = "announcements"  # {event id: {"room", "author", "at", "reminded", "confirmed": {Matrix id: ms}}}

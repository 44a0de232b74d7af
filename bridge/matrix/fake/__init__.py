"""An in-memory homeserver for unit tests of the shells, proven against Synapse by one contract suite."""

from bridge.matrix.fake.rooms import Refused, Room
from bridge.matrix.fake.server import FakeHomeserver

__all__ = ["FakeHomeserver", "Refused", "Room"]

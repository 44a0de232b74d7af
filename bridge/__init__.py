"""ent-bridge: a Matrix application service for French schools' encrypted rooms."""

__version__ = "0.1.0"

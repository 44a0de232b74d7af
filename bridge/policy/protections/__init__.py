"""Protections: pure functions (message, protection settings, context) -> reason or None."""

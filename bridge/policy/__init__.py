"""Moderation policies: YAML model and loader, pure protections and the engine that runs them."""

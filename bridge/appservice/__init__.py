"""The homeserver-facing side: the appservice HTTP API and the event dispatcher."""

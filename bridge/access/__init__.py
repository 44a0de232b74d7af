"""Access rules the homeserver enforces: relations (pure), their snapshot, the Synapse module."""

"""From directory to rooms: templates, identity mapping and the desired state (all pure)."""

"""The school directory: a pure model, importers for AAF / BE1D / YAML, and validation."""

"""frontend service."""

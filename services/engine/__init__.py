"""engine service."""

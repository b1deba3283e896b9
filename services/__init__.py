"""Thin service entry points (mapped to autellix.services in the wheel)."""

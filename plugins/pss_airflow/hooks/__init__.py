"""Hooks: connections turned into clients and environments for `pss step` workers."""

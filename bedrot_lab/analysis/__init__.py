"""Shared analysis building blocks for BEDROT's plugins (track identity, royalty splits, platforms)."""

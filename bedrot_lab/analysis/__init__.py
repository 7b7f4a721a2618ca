"""Shared analysis building blocks for BEDROT's plugins (royalty splits, statement aggregation)."""

"""Postgres: the source of truth for every notification, attempt and status."""

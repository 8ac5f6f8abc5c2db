"""Adapters: Postgres, Redis, senders, templates, clock, ids, configuration."""

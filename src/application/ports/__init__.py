"""Ports the use cases need; infrastructure provides the adapters."""

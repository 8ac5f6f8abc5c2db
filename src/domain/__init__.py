"""The notification domain: aggregates, value objects and rules. Imports nothing outward."""

"""Use cases: each loads an aggregate, calls one domain verb and commits, through ports."""

"""Entry points: the gRPC API, the worker loop, the CLI and the composition root."""

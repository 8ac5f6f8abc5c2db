"""The gRPC edge: servicers, interceptors, mapping of errors and messages."""

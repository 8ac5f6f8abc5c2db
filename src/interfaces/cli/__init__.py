"""The notifyd command."""

import os

# gRPC's C core writes its own lines straight to stderr, past the process's JSON log handler
# (an INFO line when a subprocess forks while gRPC threads are busy, for one). Only its errors,
# unless the operator asks for more; it reads this when grpc is first imported, i.e. after this.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

"""The per-host agent: gRPC server that programs this host's kernel and supervises processes."""

"""Example automatons: small servers and clients to run as instances."""

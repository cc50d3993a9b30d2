"""Generated gRPC code for agent.proto (regenerate with `make proto`)."""

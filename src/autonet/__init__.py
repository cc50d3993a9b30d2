"""autonet: a network orchestrator whose data plane is the Linux kernel.

The package is layered (see docs/architecture.md); imports go downwards only:
cli/api -> control -> agent -> dataplane/store -> model.
"""

__version__ = "0.1.0"

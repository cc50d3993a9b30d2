"""autonet-l2ovs: an L2 overlay through Open vSwitch, as an autonet plugin.

Nothing in autonet's core knows of it: it adds a kind (`L2Agent`), a spec field
(`Network.spec.l2`), a stage in the instance pipeline (`L2AgentReady`), an operator
for them, an apply-time check, and a gRPC service on every agent. See docs/extending.md.
"""

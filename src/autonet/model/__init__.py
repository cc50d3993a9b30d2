"""Object kinds, states, validation, naming and address allocation.

Pure logic: nothing here touches the kernel, the store or the network.
"""

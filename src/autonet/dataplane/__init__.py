"""Kernel programming: namespaces, links, addresses, routes, neighbours, processes in netns.

This layer knows nothing of autonet objects: it is handed names, addresses and MACs
and turns them into kernel state over netlink (pyroute2), never by spawning `ip`.
"""

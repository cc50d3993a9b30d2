"""The store layer: where the control plane's objects live (revisions, compare-and-swap, watch).

Callers depend on the :class:`Store` protocol only and get a backend from a URL::

    store = open_store("sqlite:///var/lib/autonet/store.db")
    store = open_store("etcd://100.64.0.11:2379,100.64.0.12:2379?cacert=ca.pem&cert=c.pem&key=c-key.pem")

A backend is a module with ``open_url(url) -> Store``, registered below by its
URL scheme. Modules are imported only when their scheme is used, so a backend
with third-party dependencies (etcd) costs nothing to those who do not use it.
"""

from __future__ import annotations

import importlib

from autonet.store.base import (
    Check,
    Compacted,
    Conflict,
    Delete,
    Event,
    Fenced,
    Guard,
    Op,
    Put,
    Record,
    Store,
    StoreError,
)

__all__ = [
    "Check",
    "Compacted",
    "Conflict",
    "Delete",
    "Event",
    "Fenced",
    "Guard",
    "Op",
    "Put",
    "Record",
    "Store",
    "StoreError",
    "open_store",
]

BACKENDS: dict[str, str] = {  # URL scheme -> module providing open_url()
    "sqlite": "autonet.store.sqlite",
    "etcd": "autonet.store.etcd",
}


def open_store(url: str) -> Store:
    """Open the store at ``url``; :class:`StoreError` if the scheme is unknown or it fails."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in BACKENDS:
        supported = ", ".join(f"{name}://" for name in BACKENDS)
        raise StoreError(f"unsupported store URL {url!r}: supported schemes are {supported}")
    store: Store = importlib.import_module(BACKENDS[scheme]).open_url(url)
    return store

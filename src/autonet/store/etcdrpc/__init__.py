"""Protobuf messages generated from etcd 3.4's v3 API protos (regenerate with `make proto`).

The ``.proto`` files here are etcd's own, with gogoproto options and HTTP annotations
removed and their proto package moved under ``autonet_etcd.`` (see their headers). There
are no generated service stubs: the wire paths are etcd's, declared in
:mod:`autonet.store.etcdclient`.
"""

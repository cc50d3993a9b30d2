"""Mutual TLS on the agent's gRPC port: only controller certificates may call an agent.

Both ends use files of the cluster PKI (model/pki.py): a certificate, its key and the CA.

- **The agent** (`server_credentials`) requires a client certificate signed by the CA:
  a plaintext client or one with another CA's certificate fails the TLS handshake and
  never reaches a service. `ControllerOnly`, a server interceptor, then lets through
  only peers whose certificate says `OU=controller` (`authorize_peer`): any other role
  (another host's agent certificate, an admin's) gets PERMISSION_DENIED on every method
  of every service on the server, plugins' included.
- **The controller** (`ClientTls`) dials an agent by its underlay address but verifies
  the agent's certificate against the *host name* it means to call
  (`grpc.ssl_target_name_override`): an agent certificate carries its host name as CN
  and as its first DNS SAN, so h2's certificate cannot answer for h1.

Rotation without downtime: the agent's server credentials are dynamic, their fetcher
runs at each new TLS handshake and loads the files again when they changed (a pair
caught half-written, key and certificate not matching, is skipped until it is whole);
the controller re-creates its channels when its own files change (`ClientTls.changed`).
Connections already open keep the certificates they were made with.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from autonet.model import pki

log = logging.getLogger(__name__)

ALLOWED = (pki.Role.CONTROLLER,)
RECHECK_SECONDS = 1.0  # the controller looks at its files at most this often


@dataclass(frozen=True)
class TlsFiles:
    """A certificate, its key and the CA that verifies the peers (PEM files)."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def of(
        cls, cert: Path | None, key: Path | None, ca: Path | None, what: str = "--tls-cert/--tls-key/--ca"
    ) -> TlsFiles | None:
        """All three, or none (no TLS); a part of them is an error for the user."""
        given = [p for p in (cert, key, ca) if p is not None]
        if not given:
            return None
        if len(given) != 3 or cert is None or key is None or ca is None:
            raise pki.PkiError(f"{what}: give all three or none")
        return cls(cert, key, ca)

    def signature(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when a file is replaced (pki writes by rename: a new inode)."""
        stats = [os.stat(path) for path in (self.cert, self.key, self.ca)]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def load(self) -> tuple[pki.Pair, bytes]:
        """The pair (checked to match) and the CA's PEM; `PkiError` if unreadable or mismatched."""
        try:
            cert, key, ca = self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        except OSError as exc:
            raise pki.PkiError(f"cannot read {exc.filename}: {exc.strerror}") from None
        pair = pki.load_pair(cert, key)
        pki.load_certificate(ca)
        return pair, ca


def is_loopback(listen: str) -> bool:
    """Whether a gRPC listen address `host:port` (IPv6 in brackets) is on loopback only."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the agent's side --------------------------------------------------------------------------
class ServerCredentials:
    """The agent's dynamic server credentials: the files loaded again when they change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()  # the fetcher runs on gRPC's threads
        self._seen = files.signature()
        pair, ca = files.load()
        self.serial = pair.cert.serial_number
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(pair, ca), self._fetch, require_client_authentication=True
        )

    @staticmethod
    def _configuration(pair: pki.Pair, ca: bytes) -> Any:
        return grpc.ssl_server_certificate_configuration([(pair.key_pem(), pair.cert_pem())], ca)

    def _fetch(self) -> Any:
        """At each handshake: a new configuration if the files changed, else None (keep)."""
        with self._lock:
            try:
                seen = self.files.signature()
                if seen == self._seen:
                    return None
                pair, ca = self.files.load()
            except (OSError, pki.PkiError) as exc:
                # Mid-rotation (key written, certificate not yet) or a file gone: keep serving
                # with what we have, and look again at the next handshake.
                log.warning("TLS files not reloaded (keeping the current ones): %s", exc)
                return None
            self._seen = seen
            self.serial = pair.cert.serial_number
            log.info(
                "TLS: serving certificate %s (serial %x) from %s",
                pki.common_name(pair.cert),
                self.serial,
                self.files.cert,
            )
            return self._configuration(pair, ca)


@functools.lru_cache(maxsize=256)
def _decide(pem: bytes) -> pki.Identity | str:
    try:
        return pki.authorize(pem, ALLOWED)
    except pki.PkiError as exc:
        return str(exc)


def authorize_peer(auth_context: dict[str, list[bytes]]) -> pki.Identity:
    """The controller calling, from a call's `context.auth_context()`, or `PkiError`.

    TLS has verified the chain already (the server requires a client certificate of the CA);
    this is the role check. No certificate at all (a plaintext port) is refused too.
    """
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        raise pki.UnauthorizedError("no client certificate: only controllers may call the agent")
    decision = _decide(pems[0])
    if isinstance(decision, str):
        raise pki.UnauthorizedError(decision)
    return decision


Handler = Callable[..., Any]


def _guarded(behavior: Handler, streaming_response: bool) -> Handler:
    """`behavior` behind the role check, keeping its shape (coroutine or async generator)."""

    async def refuse(context: Any) -> bool:
        try:
            authorize_peer(context.auth_context())
        except pki.PkiError as exc:
            log.warning("refused a call from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            return True
        return False

    if streaming_response:

        async def stream(request: Any, context: Any) -> Any:
            if await refuse(context):
                return
            async for reply in behavior(request, context):
                yield reply

        return stream

    async def unary(request: Any, context: Any) -> Any:
        if await refuse(context):
            return None
        return await behavior(request, context)

    return unary


class ControllerOnly(grpc.aio.ServerInterceptor):
    """Every method of every service: PERMISSION_DENIED unless the peer is a controller."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED, with nothing to guard
            return handler
        shapes = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for field, make in shapes.items():
            behavior = getattr(handler, field)
            if behavior is not None:
                return make(
                    _guarded(behavior, streaming_response=field.endswith("_stream")),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


def secure_server(files: TlsFiles | None) -> tuple[grpc.aio.Server, ServerCredentials | None]:
    """The agent's gRPC server: with `files`, controllers-only behind mutual TLS."""
    if files is None:
        return grpc.aio.server(), None
    return grpc.aio.server(interceptors=[ControllerOnly()]), ServerCredentials(files)


# --- the controller's side ------------------------------------------------------------------------
class ClientTls:
    """The controller's client credentials for agent channels, re-read when the files change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._seen = files.signature()
        self.credentials = self._credentials()
        self.generation = 0  # bumped at each reload: channels made before it are re-created
        self._checked = time.monotonic()

    def _credentials(self) -> grpc.ChannelCredentials:
        pair, ca = self.files.load()
        return grpc.ssl_channel_credentials(ca, pair.key_pem(), pair.cert_pem())

    def refresh(self) -> bool:
        """Look at the files (at most every RECHECK_SECONDS); True when they changed and
        were loaded (a half-written pair is skipped until it is whole)."""
        now = time.monotonic()
        if now - self._checked < RECHECK_SECONDS:
            return False
        self._checked = now
        try:
            seen = self.files.signature()
            if seen == self._seen:
                return False
            credentials = self._credentials()
        except (OSError, pki.PkiError) as exc:
            log.warning("agent channels: TLS files not reloaded (keeping the current ones): %s", exc)
            return False
        self._seen, self.credentials = seen, credentials
        self.generation += 1
        log.info("agent channels: client certificate %s changed, re-creating channels", self.files.cert)
        return True

    def channel(self, host: str, address: str) -> grpc.aio.Channel:
        """A channel to `address` that accepts only a certificate naming `host`."""
        return grpc.aio.secure_channel(
            address, self.credentials, options=[("grpc.ssl_target_name_override", host)]
        )


def channel(tls: ClientTls | None, host: str, address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address) if tls is None else tls.channel(host, address)

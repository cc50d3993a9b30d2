"""A small ctypes binding of libnftables, one context per network namespace.

A libnftables context talks to the kernel over a netlink socket that it opens when it
is created, in the creating thread's namespace; so we create each context in a thread
that has entered the target namespace (netns.call_in) and keep it. Commands are nft
script text, applied as one atomic transaction per call. No `nft` process is spawned.

Script text is a language: a value spliced into it could end a command and start
another (`tcp; flush ruleset`). So every value our modules put into a script goes
through one of the checks below first (a fixed set of words, ints in range, addresses
parsed and printed back by `ipaddress`, interface names of a strict pattern), and a
value that fails is a ValueError before any script is made.
"""

from __future__ import annotations

import ctypes
import ipaddress
import re
import threading

from autonet.dataplane import netns

_lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
_lib.nft_ctx_new.restype = ctypes.c_void_p
_lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
_lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
_lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
_lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
_lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
_lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
_lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
_lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
_lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]

NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4


TRANSPORTS = frozenset({"tcp", "udp"})
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")


class NftError(RuntimeError):
    pass


def transport(value: object) -> str:
    """A transport protocol from the fixed set (ValueError otherwise)."""
    if not isinstance(value, str) or value not in TRANSPORTS:
        raise ValueError(f"transport {value!r} is not one of {', '.join(sorted(TRANSPORTS))}")
    return value


def number(value: object, low: int, high: int, what: str) -> int:
    """An int in [low, high], from an int or a string of digits (64-bit JSON fields)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what} {value!r} is not a number")
    if isinstance(value, str) and not value.isdigit():
        raise ValueError(f"{what} {value!r} is not a number")
    result = int(value)
    if not low <= result <= high:
        raise ValueError(f"{what} {result} is not in {low}..{high}")
    return result


def port(value: object) -> int:
    return number(value, 1, 65535, "port")


def mark(value: object) -> int:
    """An identity (a 32-bit meta/ct mark)."""
    return number(value, 0, 0xFFFFFFFF, "identity")


def address(value: object) -> str:
    """An IPv4 or IPv6 address, printed back in its canonical form."""
    if not isinstance(value, str) or "%" in value:  # (ipaddress takes "fe80::1%<any text>")
        raise ValueError(f"address {value!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"address {value!r} is not an IP address") from None


def ifname(value: object) -> str:
    """A Linux interface name of letters, digits, '_', '.', '-' (at most 15)."""
    if not isinstance(value, str) or not _IFNAME.fullmatch(value):
        raise ValueError(f"interface name {value!r} is not valid")
    return value


class Nft:
    """An nftables context bound to one namespace."""

    def __init__(self, namespace: str | None) -> None:
        def create() -> int:
            ctx = _lib.nft_ctx_new(NFT_CTX_DEFAULT)
            if not ctx:
                raise NftError("nft_ctx_new failed")
            _lib.nft_ctx_buffer_output(ctx)
            _lib.nft_ctx_buffer_error(ctx)
            return int(ctx)

        self.namespace = namespace
        self._ctx: int | None = netns.call_in(namespace, create) if namespace else create()
        self._lock = threading.Lock()

    def run(self, script: str, json: bool = False) -> str:
        """Apply `script` atomically; returns nft's output; NftError with nft's message."""
        with self._lock:
            if self._ctx is None:
                raise NftError("nftables context is closed")
            _lib.nft_ctx_output_set_flags(self._ctx, NFT_CTX_OUTPUT_JSON if json else 0)
            rc = _lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
            output = (_lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            if rc != 0:
                error = (_lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode().strip()
                raise NftError(f"nft in {self.namespace or 'host'}: {error or 'failed'}")
            return output

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                _lib.nft_ctx_free(self._ctx)
                self._ctx = None

    def __del__(self) -> None:
        self.close()

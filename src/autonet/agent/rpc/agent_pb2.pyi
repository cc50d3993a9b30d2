from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class BootstrapRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: str
    def __init__(self, host: str | None = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = (
        "instance_name",
        "instance_uid",
        "ipv4",
        "ipv6",
        "mac",
        "mtu",
        "netns",
        "resolv_conf",
        "router_ifname",
        "router_mac",
        "router_netns",
        "vpc_uid",
    )
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_NAME_FIELD_NUMBER: _ClassVar[int]
    VPC_UID_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_NETNS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_IFNAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    ROUTER_MAC_FIELD_NUMBER: _ClassVar[int]
    IPV4_FIELD_NUMBER: _ClassVar[int]
    IPV6_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    RESOLV_CONF_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    instance_name: str
    vpc_uid: str
    netns: str
    router_netns: str
    router_ifname: str
    mac: str
    router_mac: str
    ipv4: str
    ipv6: str
    mtu: int
    resolv_conf: str
    def __init__(
        self,
        instance_uid: str | None = ...,
        instance_name: str | None = ...,
        vpc_uid: str | None = ...,
        netns: str | None = ...,
        router_netns: str | None = ...,
        router_ifname: str | None = ...,
        mac: str | None = ...,
        router_mac: str | None = ...,
        ipv4: str | None = ...,
        ipv6: str | None = ...,
        mtu: int | None = ...,
        resolv_conf: str | None = ...,
    ) -> None: ...

class Process(_message.Message):
    __slots__ = ("command", "env", "instance_uid", "user")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...

    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    command: _containers.RepeatedScalarFieldContainer[str]
    user: str
    env: _containers.ScalarMap[str, str]
    def __init__(
        self,
        instance_uid: str | None = ...,
        command: _Iterable[str] | None = ...,
        user: str | None = ...,
        env: _Mapping[str, str] | None = ...,
    ) -> None: ...

class InstanceRef(_message.Message):
    __slots__ = ("instance_uid",)
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    def __init__(self, instance_uid: str | None = ...) -> None: ...

class InstanceReport(_message.Message):
    __slots__ = (
        "deleted",
        "instance_name",
        "instance_uid",
        "last_exit",
        "netns",
        "pid",
        "process",
        "restarts",
        "wired",
    )
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    WIRED_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    instance_name: str
    netns: str
    wired: bool
    process: str
    pid: int
    restarts: int
    last_exit: str
    deleted: bool
    def __init__(
        self,
        instance_uid: str | None = ...,
        instance_name: str | None = ...,
        netns: str | None = ...,
        wired: bool | None = ...,
        process: str | None = ...,
        pid: int | None = ...,
        restarts: int | None = ...,
        last_exit: str | None = ...,
        deleted: bool | None = ...,
    ) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HostReport(_message.Message):
    __slots__ = ("boot_id", "host", "instances", "routers")
    HOST_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ROUTERS_FIELD_NUMBER: _ClassVar[int]
    host: str
    boot_id: str
    instances: _containers.RepeatedCompositeFieldContainer[InstanceReport]
    routers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        host: str | None = ...,
        boot_id: str | None = ...,
        instances: _Iterable[InstanceReport | _Mapping] | None = ...,
        routers: _Iterable[str] | None = ...,
    ) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("command", "env", "instance_uid", "stdin", "timeout", "user")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...

    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    command: _containers.RepeatedScalarFieldContainer[str]
    stdin: bytes
    env: _containers.ScalarMap[str, str]
    user: str
    timeout: float
    def __init__(
        self,
        instance_uid: str | None = ...,
        command: _Iterable[str] | None = ...,
        stdin: bytes | None = ...,
        env: _Mapping[str, str] | None = ...,
        user: str | None = ...,
        timeout: float | None = ...,
    ) -> None: ...

class ExecChunk(_message.Message):
    __slots__ = ("exit_code", "stderr", "stdout")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    exit_code: int
    def __init__(
        self, stdout: bytes | None = ..., stderr: bytes | None = ..., exit_code: int | None = ...
    ) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("instance_uid", "tail_bytes")
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    TAIL_BYTES_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    tail_bytes: int
    def __init__(self, instance_uid: str | None = ..., tail_bytes: int | None = ...) -> None: ...

class LogsReply(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: bytes | None = ...) -> None: ...

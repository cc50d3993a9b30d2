from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("instance_uid", "bridge", "port", "mac", "addresses", "mtu")
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    bridge: str
    port: str
    mac: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    mtu: int
    def __init__(self, instance_uid: _Optional[str] = ..., bridge: _Optional[str] = ..., port: _Optional[str] = ..., mac: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., mtu: _Optional[int] = ...) -> None: ...

class Port(_message.Message):
    __slots__ = ("name", "mac", "addresses")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    mac: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., mac: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Remote(_message.Message):
    __slots__ = ("mac", "underlay", "addresses")
    MAC_FIELD_NUMBER: _ClassVar[int]
    UNDERLAY_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    mac: str
    underlay: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mac: _Optional[str] = ..., underlay: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Allow(_message.Message):
    __slots__ = ("sources", "destinations", "transport", "port")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedScalarFieldContainer[str]
    destinations: _containers.RepeatedScalarFieldContainer[str]
    transport: str
    port: int
    def __init__(self, sources: _Optional[_Iterable[str]] = ..., destinations: _Optional[_Iterable[str]] = ..., transport: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class NetworkState(_message.Message):
    __slots__ = ("bridge", "vxlan", "vni", "local_underlay", "mtu", "ports", "remotes", "peers", "zone", "allows")
    BRIDGE_FIELD_NUMBER: _ClassVar[int]
    VXLAN_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    LOCAL_UNDERLAY_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    REMOTES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    ALLOWS_FIELD_NUMBER: _ClassVar[int]
    bridge: str
    vxlan: str
    vni: int
    local_underlay: str
    mtu: int
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    remotes: _containers.RepeatedCompositeFieldContainer[Remote]
    peers: _containers.RepeatedScalarFieldContainer[str]
    zone: int
    allows: _containers.RepeatedCompositeFieldContainer[Allow]
    def __init__(self, bridge: _Optional[str] = ..., vxlan: _Optional[str] = ..., vni: _Optional[int] = ..., local_underlay: _Optional[str] = ..., mtu: _Optional[int] = ..., ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ..., remotes: _Optional[_Iterable[_Union[Remote, _Mapping]]] = ..., peers: _Optional[_Iterable[str]] = ..., zone: _Optional[int] = ..., allows: _Optional[_Iterable[_Union[Allow, _Mapping]]] = ...) -> None: ...

class DumpRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Bridge(_message.Message):
    __slots__ = ("name", "ports", "flows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    ports: _containers.RepeatedScalarFieldContainer[str]
    flows: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., ports: _Optional[_Iterable[str]] = ..., flows: _Optional[_Iterable[str]] = ...) -> None: ...

class OvsStatus(_message.Message):
    __slots__ = ("running", "version", "bridges")
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BRIDGES_FIELD_NUMBER: _ClassVar[int]
    running: bool
    version: str
    bridges: _containers.RepeatedCompositeFieldContainer[Bridge]
    def __init__(self, running: _Optional[bool] = ..., version: _Optional[str] = ..., bridges: _Optional[_Iterable[_Union[Bridge, _Mapping]]] = ...) -> None: ...

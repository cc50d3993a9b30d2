from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Qos(_message.Message):
    __slots__ = ("ingress_mbps", "egress_mbps", "priority")
    INGRESS_MBPS_FIELD_NUMBER: _ClassVar[int]
    EGRESS_MBPS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ingress_mbps: float
    egress_mbps: float
    priority: str
    def __init__(self, ingress_mbps: _Optional[float] = ..., egress_mbps: _Optional[float] = ..., priority: _Optional[str] = ...) -> None: ...

class QosRequest(_message.Message):
    __slots__ = ("instance_uid", "qos")
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    qos: Qos
    def __init__(self, instance_uid: _Optional[str] = ..., qos: _Optional[_Union[Qos, _Mapping]] = ...) -> None: ...

class Flow(_message.Message):
    __slots__ = ("flow_id", "protocol", "direction", "local_address", "local_port", "peer_address", "peer_port", "peer_instance", "peer_automaton", "service_address", "tx_bytes", "tx_packets", "rx_bytes", "rx_packets", "age_seconds", "state")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_PORT_FIELD_NUMBER: _ClassVar[int]
    PEER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    PEER_AUTOMATON_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    flow_id: int
    protocol: str
    direction: str
    local_address: str
    local_port: int
    peer_address: str
    peer_port: int
    peer_instance: str
    peer_automaton: str
    service_address: str
    tx_bytes: int
    tx_packets: int
    rx_bytes: int
    rx_packets: int
    age_seconds: float
    state: str
    def __init__(self, flow_id: _Optional[int] = ..., protocol: _Optional[str] = ..., direction: _Optional[str] = ..., local_address: _Optional[str] = ..., local_port: _Optional[int] = ..., peer_address: _Optional[str] = ..., peer_port: _Optional[int] = ..., peer_instance: _Optional[str] = ..., peer_automaton: _Optional[str] = ..., service_address: _Optional[str] = ..., tx_bytes: _Optional[int] = ..., tx_packets: _Optional[int] = ..., rx_bytes: _Optional[int] = ..., rx_packets: _Optional[int] = ..., age_seconds: _Optional[float] = ..., state: _Optional[str] = ...) -> None: ...

class FlowsReply(_message.Message):
    __slots__ = ("flows",)
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[Flow]
    def __init__(self, flows: _Optional[_Iterable[_Union[Flow, _Mapping]]] = ...) -> None: ...

class BootstrapRequest(_message.Message):
    __slots__ = ("host", "index")
    HOST_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    host: str
    index: int
    def __init__(self, host: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("instance_uid", "instance_name", "vpc_uid", "netns", "router_netns", "router_ifname", "mac", "router_mac", "ipv4", "ipv6", "mtu", "resolv_conf", "qos", "adopt_netns")
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
    QOS_FIELD_NUMBER: _ClassVar[int]
    ADOPT_NETNS_FIELD_NUMBER: _ClassVar[int]
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
    qos: Qos
    adopt_netns: str
    def __init__(self, instance_uid: _Optional[str] = ..., instance_name: _Optional[str] = ..., vpc_uid: _Optional[str] = ..., netns: _Optional[str] = ..., router_netns: _Optional[str] = ..., router_ifname: _Optional[str] = ..., mac: _Optional[str] = ..., router_mac: _Optional[str] = ..., ipv4: _Optional[str] = ..., ipv6: _Optional[str] = ..., mtu: _Optional[int] = ..., resolv_conf: _Optional[str] = ..., qos: _Optional[_Union[Qos, _Mapping]] = ..., adopt_netns: _Optional[str] = ...) -> None: ...

class Process(_message.Message):
    __slots__ = ("instance_uid", "command", "user", "env", "resources", "image")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    command: _containers.RepeatedScalarFieldContainer[str]
    user: str
    env: _containers.ScalarMap[str, str]
    resources: Resources
    image: str
    def __init__(self, instance_uid: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., user: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., image: _Optional[str] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("memory_mb", "pids", "cpu")
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    memory_mb: int
    pids: int
    cpu: float
    def __init__(self, memory_mb: _Optional[int] = ..., pids: _Optional[int] = ..., cpu: _Optional[float] = ...) -> None: ...

class InstanceRef(_message.Message):
    __slots__ = ("instance_uid",)
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    def __init__(self, instance_uid: _Optional[str] = ...) -> None: ...

class InstanceReport(_message.Message):
    __slots__ = ("instance_uid", "instance_name", "netns", "wired", "process", "pid", "restarts", "last_exit", "deleted", "listening", "process_uid")
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    WIRED_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    LISTENING_FIELD_NUMBER: _ClassVar[int]
    PROCESS_UID_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    instance_name: str
    netns: str
    wired: bool
    process: str
    pid: int
    restarts: int
    last_exit: str
    deleted: bool
    listening: _containers.RepeatedScalarFieldContainer[str]
    process_uid: int
    def __init__(self, instance_uid: _Optional[str] = ..., instance_name: _Optional[str] = ..., netns: _Optional[str] = ..., wired: _Optional[bool] = ..., process: _Optional[str] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., last_exit: _Optional[str] = ..., deleted: _Optional[bool] = ..., listening: _Optional[_Iterable[str]] = ..., process_uid: _Optional[int] = ...) -> None: ...

class Vtep(_message.Message):
    __slots__ = ("underlay", "mac", "ipv4", "ipv6")
    UNDERLAY_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    IPV4_FIELD_NUMBER: _ClassVar[int]
    IPV6_FIELD_NUMBER: _ClassVar[int]
    underlay: str
    mac: str
    ipv4: str
    ipv6: str
    def __init__(self, underlay: _Optional[str] = ..., mac: _Optional[str] = ..., ipv4: _Optional[str] = ..., ipv6: _Optional[str] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("host", "vtep", "addresses")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VTEP_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    host: str
    vtep: Vtep
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, host: _Optional[str] = ..., vtep: _Optional[_Union[Vtep, _Mapping]] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("transport", "port", "source_identity", "destination_identity")
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    transport: str
    port: int
    source_identity: int
    destination_identity: int
    def __init__(self, transport: _Optional[str] = ..., port: _Optional[int] = ..., source_identity: _Optional[int] = ..., destination_identity: _Optional[int] = ...) -> None: ...

class VpcState(_message.Message):
    __slots__ = ("vpc_uid", "router_netns", "vxlan_ifname", "vni", "local", "mtu", "peers", "rules", "vpc_name", "services", "members", "seq", "epoch")
    VPC_UID_FIELD_NUMBER: _ClassVar[int]
    ROUTER_NETNS_FIELD_NUMBER: _ClassVar[int]
    VXLAN_IFNAME_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    VPC_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    vpc_uid: str
    router_netns: str
    vxlan_ifname: str
    vni: int
    local: Vtep
    mtu: int
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    vpc_name: str
    services: _containers.RepeatedCompositeFieldContainer[Service]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    seq: int
    epoch: int
    def __init__(self, vpc_uid: _Optional[str] = ..., router_netns: _Optional[str] = ..., vxlan_ifname: _Optional[str] = ..., vni: _Optional[int] = ..., local: _Optional[_Union[Vtep, _Mapping]] = ..., mtu: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., vpc_name: _Optional[str] = ..., services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., seq: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class VpcDelta(_message.Message):
    __slots__ = ("vpc_uid", "router_netns", "seq", "base_seq", "peers", "removed_peers", "members", "removed_members", "added_rules", "removed_rules", "services", "removed_services", "epoch")
    VPC_UID_FIELD_NUMBER: _ClassVar[int]
    ROUTER_NETNS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    BASE_SEQ_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_PEERS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ADDED_RULES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_RULES_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_SERVICES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    vpc_uid: str
    router_netns: str
    seq: int
    base_seq: int
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    removed_peers: _containers.RepeatedScalarFieldContainer[str]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    removed_members: _containers.RepeatedScalarFieldContainer[str]
    added_rules: _containers.RepeatedCompositeFieldContainer[Rule]
    removed_rules: _containers.RepeatedCompositeFieldContainer[Rule]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    removed_services: _containers.RepeatedScalarFieldContainer[str]
    epoch: int
    def __init__(self, vpc_uid: _Optional[str] = ..., router_netns: _Optional[str] = ..., seq: _Optional[int] = ..., base_seq: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., removed_peers: _Optional[_Iterable[str]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., removed_members: _Optional[_Iterable[str]] = ..., added_rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., removed_rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., removed_services: _Optional[_Iterable[str]] = ..., epoch: _Optional[int] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("address", "instance", "automaton", "identity")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    AUTOMATON_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    address: str
    instance: str
    automaton: str
    identity: int
    def __init__(self, address: _Optional[str] = ..., instance: _Optional[str] = ..., automaton: _Optional[str] = ..., identity: _Optional[int] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("name", "vip4", "vip6", "ports")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIP4_FIELD_NUMBER: _ClassVar[int]
    VIP6_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    vip4: str
    vip6: str
    ports: _containers.RepeatedCompositeFieldContainer[ServicePort]
    def __init__(self, name: _Optional[str] = ..., vip4: _Optional[str] = ..., vip6: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[ServicePort, _Mapping]]] = ...) -> None: ...

class ServicePort(_message.Message):
    __slots__ = ("transport", "port", "backends")
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    transport: str
    port: int
    backends: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, transport: _Optional[str] = ..., port: _Optional[int] = ..., backends: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncReport(_message.Message):
    __slots__ = ("present", "added", "removed", "snapshot_needed", "seq")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_NEEDED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    present: bool
    added: int
    removed: int
    snapshot_needed: bool
    seq: int
    def __init__(self, present: _Optional[bool] = ..., added: _Optional[int] = ..., removed: _Optional[int] = ..., snapshot_needed: _Optional[bool] = ..., seq: _Optional[int] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("instance_uid",)
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    def __init__(self, instance_uid: _Optional[str] = ...) -> None: ...

class HostReport(_message.Message):
    __slots__ = ("host", "boot_id", "instances", "routers")
    HOST_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ROUTERS_FIELD_NUMBER: _ClassVar[int]
    host: str
    boot_id: str
    instances: _containers.RepeatedCompositeFieldContainer[InstanceReport]
    routers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, host: _Optional[str] = ..., boot_id: _Optional[str] = ..., instances: _Optional[_Iterable[_Union[InstanceReport, _Mapping]]] = ..., routers: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("instance_uid", "command", "stdin", "env", "user", "timeout")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
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
    def __init__(self, instance_uid: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., stdin: _Optional[bytes] = ..., env: _Optional[_Mapping[str, str]] = ..., user: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class ExecChunk(_message.Message):
    __slots__ = ("stdout", "stderr", "exit_code")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    exit_code: int
    def __init__(self, stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit_code: _Optional[int] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("instance_uid", "tail_lines", "follow")
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    instance_uid: str
    tail_lines: int
    follow: bool
    def __init__(self, instance_uid: _Optional[str] = ..., tail_lines: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogsReply(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

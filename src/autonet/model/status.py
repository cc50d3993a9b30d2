"""The status of each kind as a typed model: every key an operator or the API writes.

`Object.status` stays a plain dict (it is stored as JSON as it is, and a key appears
only once something wrote it); these models say what its keys are, their types and what
they mean. The kind registers its model (`KindInfo.status_model`), and the controller's
write path checks every status key a write changes against it (`KindInfo.check_status`):
a misspelt key or a value of the wrong type fails loudly instead of being stored.
Plugins declare the keys they add with `PluginAPI.extend_status`.

Reading: `InstanceStatus.of(obj)` is the typed view of an object's status. Every field
is optional (None: not written yet) because the pipeline fills the status stage by
stage; keys the model does not declare (a plugin's) are kept as extras.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from autonet.model.objects import Object


class Status(BaseModel):
    """The keys of every kind's status."""

    model_config = ConfigDict(extra="allow")

    state: str | None = None  # the pipeline state the object is in
    reason: str | None = None  # why it waits, retries or failed ("" when none of these)

    @classmethod
    def of(cls, obj: Object) -> Self:
        """The object's status as this model (a copy: changing it changes nothing stored)."""
        return cls.model_validate(obj.status)


class HostStatus(Status):
    """(API answers add `instances`, counted on each read; it is never stored.)"""

    boot_id: str | None = None  # the boot ID its agent last reported (registration, heartbeat)
    booted: str | None = None  # the agent boot its last bootstrap (Init) was for; != boot_id: bootstrap again
    index: int | None = (
        None  # leased at Init (pool `host`): its VTEP addresses and flow-ID space derive from it
    )
    mtu: int | None = None  # its underlay MTU, as its agent reported it at registration
    hostname: str | None = None  # the machine's hostname, as its agent reported it


class VpcStatus(Status):
    vni: int | None = None  # the VXLAN network identifier leased at Init (pool `vni`)


class NetworkStatus(Status):
    vni: int | None = None  # its VPC's VNI, copied when the network is provisioned


class AutomatonStatus(Status):
    """(API answers add `ready`, `instances`, `lost` and `failed`, counted from the
    instances on each read; they are never stored.)"""

    replicas: int | None = None  # the replicas its last reconciliation (Init) created instances for
    vpc: str | None = None  # its network's VPC, where its service addresses and identity are leased
    identity: int | None = None  # its policy identity, unique in the VPC (pool `identity/<vpc>`, from 1)
    vip4: str | None = None  # its IPv4 service address (pool `vip/<vpc>`), if the VPC has IPv4
    vip6: str | None = None  # its IPv6 service address, if the VPC has IPv6


class CompositionStatus(Status):
    links: int | None = None  # how many links it opened
    vpcs: list[str] | None = None  # the VPCs whose routers enforce its links


class InstanceStatus(Status):
    """Written stage by stage: `host` at Init (scheduler), the addresses and kernel names
    at Scheduled (IPAM), `qos` at Addressed (wiring), `network_hosts` at Wired (network
    operator), `process_hash` at Routed, `pid`, `restarts`, `process_uid` and `last_exit` at Running;
    `process_down` is the API's record of an agent's report."""

    host: str | None = None  # the host it is placed on
    ipv4: str | None = None  # its IPv4 address, leased from its network (pool `ip/<network>`)
    ipv6: str | None = None  # its IPv6 address, leased from its network
    network: str | None = None  # the network it was addressed from
    network_spec: dict[str, Any] | None = None  # that network's spec then (plugins' stage predicates read it)
    vpc: str | None = None  # its network's VPC
    vpc_uid: str | None = None  # that VPC's uid (kernel names of its router derive from it)
    netns: str | None = None  # its network namespace on the host
    router_netns: str | None = None  # its VPC router's namespace on the host
    router_ifname: str | None = None  # the router's end of its veth
    mac: str | None = None  # the MAC of its eth0
    router_mac: str | None = None  # the MAC of the router's end of its veth
    mtu: int | None = None  # its eth0 MTU: the host's underlay MTU less the VXLAN overhead
    qos: dict[str, Any] | None = None  # the rate limits its endpoint has (the automaton's spec.qos; {}: none)
    network_hosts: list[str] | None = None  # the hosts holding instances of its network, as of its wiring
    process_hash: str | None = None  # digest of the command, user and env its process was started with
    pid: int | None = None  # its process's PID on the host, when last confirmed ready
    restarts: int | None = None  # how often its agent restarted the process, when last confirmed ready
    process_down: str | None = None  # an agent's report that its serving process stopped (why)
    process_uid: int | None = None  # the uid/gid its host leased it (its process and exec run as it; 0: root)
    last_exit: str | None = None  # how its process last ended, when last confirmed ready ("" if never)


class AddressedStatus(InstanceStatus):
    """An instance's status from `Addressed` on: what wiring needs is there (the
    scheduler's and IPAM's keys), or reading it fails naming the missing key."""

    host: str
    network: str
    vpc: str
    vpc_uid: str
    netns: str
    router_netns: str
    router_ifname: str
    mac: str
    router_mac: str
    mtu: int

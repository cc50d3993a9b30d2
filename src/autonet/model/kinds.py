"""The kinds of object, their spec models and their state pipelines.

A `KindInfo` says how a kind is named on the command line, which pydantic model
validates its spec, which one declares its status (model/status.py: every write's
changed status keys are checked against it), and the ordered `pipeline` of states its
objects walk through.
A stage may carry a predicate (`when`): it is skipped for objects it does not apply
to, which is how a plugin inserts a state into an existing kind (for example an
`L2AgentReady` stage after `Wired`, only for instances on OVS networks).
Built-in kinds are registered in `builtin_kinds()`; plugins call `KindRegistry.add`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic import ValidationError as PydanticError

from autonet.model.errors import StatusError, ValidationError, shown
from autonet.model.objects import Object
from autonet.model.status import (
    AutomatonStatus,
    CompositionStatus,
    HostStatus,
    InstanceStatus,
    NetworkStatus,
    Status,
    VpcStatus,
)

INIT = "Init"
PROVISIONED = "Provisioned"
FAILED = "Failed"
TERMINATING = "Terminating"
DELETED = "Deleted"
READY = "Ready"
CONNECTED = "Connected"
LOST = "Lost"

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
NAME_MAX = 40
PROTOCOL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
# A local container image reference, name[:tag][@digest]; never starting with '-', so
# that it cannot be taken for a podman flag.
IMAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$"
IMAGE_MAX_LENGTH = 255


def check_name(kind: str, name: object) -> str:
    """Names become DNS labels and parts of kernel names: keep them plain."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{kind}: name: required")
    if len(name) > NAME_MAX:
        raise ValidationError(
            f'{kind} "{shown(name[:20])}...": name: too long ({len(name)} characters, at most {NAME_MAX})'
        )
    if not NAME_RE.match(name):
        raise ValidationError(
            f'{kind} "{shown(name)}": name: only lowercase letters, digits and inner "-" are allowed'
        )
    return name


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"invalid CIDR {value!r}: {exc}") from None


def _protocol(value: str) -> str:
    if not PROTOCOL_RE.match(value):
        raise ValueError(f"invalid protocol name {value!r}")
    return value


Cidr = Annotated[str, AfterValidator(_network)]
Protocol = Annotated[str, AfterValidator(_protocol)]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class VpcSpec(Spec):
    cidrs: list[Cidr] = Field(min_length=1)
    vni: int | None = Field(default=None, ge=1, le=16_777_215)
    # Where automatons' service addresses come from; by default the last part of each
    # CIDR (see addressing.service_ranges). Networks may not overlap it.
    service_cidrs: list[Cidr] | None = None


class NetworkSpec(Spec):
    vpc: str
    cidrs: list[Cidr] = Field(min_length=1)


class Provide(Spec):
    protocol: Protocol
    transport: Literal["tcp", "udp"] = "tcp"
    port: int = Field(ge=1, le=65535)


class Qos(Spec):
    ingress_mbps: float | None = Field(default=None, gt=0)
    egress_mbps: float | None = Field(default=None, gt=0)
    priority: Literal["low", "normal", "high"] = "normal"


class Resources(Spec):
    """Limits of each instance of an automaton, enforced by a cgroup of the instance's own."""

    memory_mb: int | None = Field(default=None, ge=8, le=4_194_304)  # over it: OOM-killed, restarted
    pids: int | None = Field(default=None, ge=1, le=4_194_304)  # processes and threads together
    cpu: float | None = Field(default=None, ge=0.01, le=1024)  # cores: 0.5 is half of one


def valid_image(value: str) -> bool:
    """Whether `value` is a local image reference (checked again by the agent)."""
    return len(value) <= IMAGE_MAX_LENGTH and re.fullmatch(IMAGE_PATTERN, value) is not None


def _image(value: str | None) -> str | None:
    if value is not None and not valid_image(value):
        raise ValueError(f"{value!r} is not a local image reference (name[:tag][@digest])")
    return value


def _user(value: str | None) -> str | None:
    # Instances run as their own uid, leased by their host's agent; the only other
    # choice is root, which gives isolation up (and is admin-only in the API). A named
    # user would be shared by every automaton naming it: refused.
    if value in (None, ""):
        return None
    if value != "root":
        raise ValueError(
            f'{value!r} is not accepted: instances run as their own uid; only "root" may be named'
        )
    return value


class AutomatonSpec(Spec):
    network: str
    command: list[str] = Field(default_factory=list)  # required unless image or external
    # A container image from the hosts' local storage, run with podman in each instance's
    # namespace; `command`, if given, replaces the image's own command.
    image: Annotated[str | None, AfterValidator(_image)] = None
    provides: list[Provide] = Field(default_factory=list)
    consumes: list[Protocol] = Field(default_factory=list)
    replicas: int = Field(default=1, ge=0, le=10_000)
    qos: Qos | None = None
    # None: the instance's own uid/gid, no capabilities; "root": root, giving up isolation.
    user: Annotated[str | None, AfterValidator(_user)] = None
    resources: Resources | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # External: its instances are containers a runtime made and attached through
    # autonet-cni (Instance spec.attachment); autonet wires them and starts no process.
    external: bool = False

    @model_validator(mode="after")
    def _command_or_external(self) -> Self:
        if self.external:
            if self.command or self.image:
                raise ValueError(
                    "an external automaton has no command or image (its instances are attached containers)"
                )
            if "replicas" in self.model_fields_set and self.replicas:
                raise ValueError(
                    "an external automaton has no replicas: containers attach through autonet-cni"
                )
            self.replicas = 0
        elif not self.command and not self.image:
            raise ValueError(
                "command: required (or image: to run a container image, or external: true for "
                "containers attached through autonet-cni)"
            )
        return self


class Link(Spec):
    from_: str = Field(alias="from")
    to: str
    protocol: Protocol


class CompositionSpec(Spec):
    links: list[Link] = Field(default_factory=list)


class HostSpec(Spec):
    underlay: str  # the host's underlay address (IPv4 or IPv6)
    rpc: str  # host:port of the agent's gRPC server
    tag: str  # the 4-character tag in the host's kernel object names
    capacity: int | None = Field(default=None, ge=0)


class Attachment(Spec):
    """A container attached by a runtime through autonet-cni: where it is."""

    container_id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    netns: str = Field(pattern=r"^/[^\x00]*$", max_length=4096)  # the runtime's namespace path
    host: str  # the host the runtime (and the container) is on
    ifname: Literal["eth0"] = "eth0"


class InstanceSpec(Spec):
    automaton: str
    ordinal: int = Field(ge=0)
    attachment: Attachment | None = None


@dataclass
class Stage:
    state: str
    when: Callable[[Object], bool] | None = None


@dataclass
class KindInfo:
    name: str
    plural: str
    spec_model: type[BaseModel]
    pipeline: list[Stage]
    done: set[str] = field(default_factory=lambda: {PROVISIONED})  # states a --wait accepts
    user_managed: bool = True  # may appear in manifests
    immutable: tuple[str, ...] = ()  # spec fields an update may not change
    aliases: tuple[str, ...] = ()
    # Fields plugins added to the spec: name -> (annotation, default).
    extensions: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # What its status holds (model/status.py); None: a kind whose status is not checked.
    status_model: type[Status] | None = None
    # Keys plugins added to the status: name -> (annotation, None).
    status_extensions: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    _model: type[BaseModel] | None = None
    _status: type[Status] | None = None

    def extend_spec(self, name: str, annotation: Any, default: Any = None) -> None:
        if name in self.spec_model.model_fields or name in self.extensions:
            raise ValueError(f"{self.name}.spec.{name} already exists")
        self.extensions[name] = (annotation, default)
        self._model = None

    def model(self) -> type[BaseModel]:
        """The spec model with the plugins' extensions."""
        if self._model is None:
            self._model = _extended(self.spec_model, self.extensions)
        return self._model

    def extend_status(self, name: str, annotation: Any) -> None:
        """Declare a status key a plugin writes (e.g. `l2_port` on Instance)."""
        if self.status_model is None:
            raise ValueError(f"{self.name} has no status model to extend")
        if name in self.status_model.model_fields or name in self.status_extensions:
            raise ValueError(f"{self.name}.status.{name} already exists")
        self.status_extensions[name] = (annotation | None, None)
        self._status = None

    def status(self) -> type[Status] | None:
        """The status model with the plugins' extensions (None: not checked)."""
        if self.status_model is None:
            return None
        if self._status is None:
            self._status = _extended(self.status_model, self.status_extensions)
        return self._status

    def check_status(self, name: str, status: Mapping[str, Any], before: Mapping[str, Any] | None) -> None:
        """StatusError unless every key of `status` that differs from `before` (every
        key, without `before`) is declared by the kind's status model, with a value of
        its type. Called on every write (control/cache.py: CachedWrites)."""
        model = self.status()
        if model is None:
            return
        changed = {k: v for k, v in status.items() if before is None or k not in before or before[k] != v}
        if not changed:
            return
        unknown = sorted(changed.keys() - model.model_fields.keys())
        if unknown:
            declared_by = model.__name__.removesuffix("Extended")
            raise StatusError(
                f'{self.name} "{name}": status.{unknown[0]}: unknown key (not in {declared_by}; '
                "a plugin declares the keys it adds with PluginAPI.extend_status)"
            )
        try:
            model.model_validate(changed, strict=True)
        except PydanticError as exc:
            err = exc.errors()[0]
            where = ".".join(str(part) for part in ("status", *err["loc"]))
            raise StatusError(f'{self.name} "{name}": {where}: {err["msg"]} (got {err["input"]!r})') from None

    def first_state(self) -> str:
        return self.pipeline[0].state

    def next_state(self, obj: Object) -> str:
        """The stage after the object's current one that applies to it."""
        states = [stage.state for stage in self.pipeline]
        if obj.state not in states:
            raise KeyError(f"{self.name} has no state {obj.state!r} in its pipeline")
        for stage in self.pipeline[states.index(obj.state) + 1 :]:
            if stage.when is None or stage.when(obj):
                return stage.state
        raise KeyError(f"{self.name}: no state after {obj.state!r}")

    def insert_stage(self, state: str, after: str, when: Callable[[Object], bool] | None) -> None:
        states = [stage.state for stage in self.pipeline]
        if state in states:
            raise ValueError(f"{self.name} already has a state {state!r}")
        self.pipeline.insert(states.index(after) + 1, Stage(state, when))

    def validate_spec(self, name: str, spec: Any) -> dict[str, Any]:
        """Validated spec as JSON, or ValidationError naming the field."""
        try:
            model = self.model().model_validate(spec if spec is not None else {})
        except PydanticError as exc:
            errors = exc.errors()
            # A misspelt field also shows up as a missing one: name the misspelling.
            err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
            where = ".".join(
                shown(part) if isinstance(part, str) else str(part) for part in ("spec", *err["loc"])
            )
            message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            raise ValidationError(f'{self.name} "{name}": {where}: {message}') from None
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)


M = TypeVar("M", bound=BaseModel)


def _extended(base: type[M], fields: dict[str, tuple[Any, Any]]) -> type[M]:
    """`base` with the fields plugins added (name -> (annotation, default))."""
    if not fields:
        return base
    return create_model(f"{base.__name__}Extended", __base__=base, **fields)  # type: ignore[call-overload]


class KindRegistry:
    """Kinds by name; looked up case-insensitively by name, plural or alias."""

    def __init__(self, kinds: Iterable[KindInfo] = ()) -> None:
        self._kinds: dict[str, KindInfo] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: KindInfo) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"kind {kind.name} is registered twice")
        self._kinds[kind.name] = kind

    def remove(self, name: str) -> None:
        self._kinds.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._kinds

    def __getitem__(self, name: str) -> KindInfo:
        return self._kinds[name]

    def all(self) -> list[KindInfo]:
        return list(self._kinds.values())

    def resolve(self, word: str) -> KindInfo:
        wanted = word.lower()
        for kind in self._kinds.values():
            names = {kind.name.lower(), kind.plural.lower(), *(a.lower() for a in kind.aliases)}
            if wanted in names:
                return kind
        known = ", ".join(sorted(k.name for k in self._kinds.values()))
        raise ValidationError(f"unknown kind {word!r} (known: {known})")


INSTANCE_PIPELINE = [
    "Init",  # scheduler picks a host
    "Scheduled",  # IPAM leases addresses, names the kernel objects
    "Addressed",  # the agent wires netns, veth, addresses, routes
    "Wired",  # the network operator routes the instance on every relevant host
    "Routed",  # the agent starts the automaton's process
    "Running",  # readiness confirmed
    "Provisioned",
]


def builtin_kinds() -> list[KindInfo]:
    def simple(*states: str) -> list[Stage]:
        return [Stage(state) for state in states]

    return [
        KindInfo(
            "Host",
            "hosts",
            HostSpec,
            simple(INIT, CONNECTED, READY),
            done={READY},
            user_managed=False,
            status_model=HostStatus,
        ),
        KindInfo(
            "Vpc",
            "vpcs",
            VpcSpec,
            simple(INIT, PROVISIONED),
            immutable=("cidrs", "vni", "service_cidrs"),
            status_model=VpcStatus,
        ),
        KindInfo(
            "Network",
            "networks",
            NetworkSpec,
            simple(INIT, PROVISIONED),
            immutable=("vpc", "cidrs"),
            status_model=NetworkStatus,
        ),
        KindInfo(
            "Automaton",
            "automatons",
            AutomatonSpec,
            simple(INIT, PROVISIONED),
            immutable=("network",),
            aliases=("automata",),
            status_model=AutomatonStatus,
        ),
        KindInfo(
            "Composition",
            "compositions",
            CompositionSpec,
            simple(INIT, PROVISIONED),
            status_model=CompositionStatus,
        ),
        KindInfo(
            "Instance",
            "instances",
            InstanceSpec,
            simple(*INSTANCE_PIPELINE),
            user_managed=False,
            status_model=InstanceStatus,
        ),
    ]

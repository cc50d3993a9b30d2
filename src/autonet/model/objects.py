"""The generic object: kind, name, metadata, spec (what the user asked), status (what is).

Every kind shares this envelope; the kind's spec model (kinds.py) validates `spec`.
`status.state` walks the kind's pipeline; `status.reason` says why an object failed
or waits. The store keeps objects as JSON; `revision` is the store's, set on read.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Metadata(BaseModel):
    uid: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created: str = Field(default_factory=now)
    revision: int = 0
    deleting: bool = False
    owner: str | None = None  # "Kind/name" of the object that made this one, if any


class Object(BaseModel):
    kind: str
    name: str
    metadata: Metadata = Field(default_factory=Metadata)
    spec: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] = Field(default_factory=dict)

    @property
    def state(self) -> str:
        return str(self.status.get("state", ""))

    @property
    def uid(self) -> str:
        return self.metadata.uid

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def to_data(self) -> dict[str, Any]:
        """The JSON document kept in the store (the revision lives in the store itself)."""
        data = self.model_dump(mode="json")
        data["metadata"].pop("revision", None)
        return data

    def view(self) -> dict[str, Any]:
        """The object as JSON for reading (an API answer): cheap, as it shares `spec` and
        copies `status` one level only; the caller may add status keys, nothing deeper."""
        return {
            "kind": self.kind,
            "name": self.name,
            "metadata": self.metadata.model_dump(mode="json"),
            "spec": self.spec,
            "status": dict(self.status),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any], revision: int) -> Object:
        obj = cls.model_validate(data)
        obj.metadata.revision = revision
        return obj

    def with_status(self, **changes: Any) -> Object:
        """A copy with status fields changed (None removes a field)."""
        status = dict(self.status)
        for key, value in changes.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        return self.model_copy(update={"status": status}, deep=True)

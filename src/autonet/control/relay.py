"""Heartbeats heard by one controller, told to the others (several controllers on etcd).

An agent registers with, and heartbeats to, one controller's API — any of them — while
host liveness is judged by the owner of the ``hosts`` shard (control/shards.py), which
may be another. So every ``PUBLISH_EVERY`` seconds each controller that heard heartbeats
itself puts ``<root>/heard/<member id>`` on its member lease:
``{"at": <wall-clock time>, "ages": {host: seconds since heard}}``, and every controller
watches ``<root>/heard/`` and takes each other member's news in
(:meth:`~autonet.control.liveness.HostLiveness.beat_at`: heard ``age`` seconds before the
news arrived). One small write per controller and half second, whatever the number of
hosts, none while no agent talks to it, and none of it in the objects' watch.

Ages, not timestamps, carry the time (controllers' monotonic clocks cannot be
compared); the wall-clock ``at`` only discards news older than the host timeout (a
member that stopped publishing, a watch that was away): a small clock skew costs nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from autonet.control.liveness import HostLiveness
from autonet.control.members import Membership, PrefixMirror
from autonet.store import StoreError
from autonet.store.etcd import EtcdStore

log = logging.getLogger(__name__)

PUBLISH_EVERY = 0.5


class HeartbeatRelay:
    def __init__(
        self, store: EtcdStore, membership: Membership, liveness: HostLiveness, every: float = PUBLISH_EVERY
    ) -> None:
        self.store = store
        self.membership = membership
        self.liveness = liveness
        self.every = every
        self.prefix = store.root + b"heard/"
        self.mirror = PrefixMirror(store.client, self.prefix, self._news)
        self._taken: dict[str, int] = {}  # member -> mod revision of its news last taken in

    def _news(self) -> None:
        now, wall = time.monotonic(), time.time()
        for member, kv in self.mirror.kvs.items():
            if member == self.membership.id or self._taken.get(member) == kv.mod_revision:
                continue
            self._taken[member] = kv.mod_revision
            try:
                news = json.loads(kv.value)
                late = max(0.0, wall - float(news["at"]))
                ages = {str(host): float(age) for host, age in news["ages"].items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("heartbeat news of member %s is not readable: ignored", member)
                continue
            if late > self.liveness.timeout:
                continue  # old news: the member stopped telling, or this watch was away
            for host, age in ages.items():
                self.liveness.beat_at(host, now - age)

    async def publish(self) -> None:
        """Put what this controller heard in the last round, if anything (on its lease)."""
        heard = self.liveness.heard_within(self.every * 2)
        if not heard or not self.membership.lease:
            return
        news = {"at": time.time(), "ages": {host: round(age, 3) for host, age in heard.items()}}
        key = self.prefix + self.membership.id.encode()
        await self.store.client.put(key, json.dumps(news).encode(), lease=self.membership.lease)

    async def run(self) -> None:
        """Publish every ``every`` seconds and take the others' news in, until cancelled."""
        mirror = asyncio.create_task(self.mirror.run(), name="heard-watch")
        try:
            while True:
                await asyncio.sleep(self.every)
                try:
                    await self.publish()
                except StoreError as exc:
                    log.debug("cannot publish heartbeats heard: %s", exc)
        finally:
            mirror.cancel()
            await asyncio.gather(mirror, return_exceptions=True)

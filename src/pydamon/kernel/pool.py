"""pydamon's own kdamonds, kept in its run directory so that several pydamon processes share them.

Writing ``nr_kdamonds`` recreates every kdamond directory and fails with ``EBUSY`` while one
runs, so kdamonds cannot be added one at a time while another pydamon context runs. The pool
therefore creates :data:`POOL_SLOTS` kdamonds at once, only when ``nr_kdamonds`` is 0 (or every
existing one is pydamon's own and all are off), records them in
:func:`pydamon.runstate.kdamond_pool_path` with each slot's owner pid, and hands out a free
slot to each context. When the last slot is released, ``nr_kdamonds`` goes back to 0. A
kdamond pydamon did not create is never changed: the pool refuses in one line
(:class:`KdamondNotOwned`).

The record is only believed while ``nr_kdamonds`` still equals what the pool wrote: someone else
writing it recreated the directories, and they are no longer pydamon's.

After a ``kill -9`` a slot's owner is dead: :meth:`KdamondPool.orphans` finds it and
:meth:`KdamondPool.stop_orphans` turns its kdamond off and frees the slot.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydamon.kernel.sysfs import DamonSysfs
from pydamon.kernel.sysfs_common import KdamondNotOwned, KernelSysfsError, join
from pydamon.runstate import kdamond_pool_path, pid_alive

#: Kdamonds created at once: enough for several pydamon contexts (and modules) at a time.
POOL_SLOTS = 4


@dataclass
class PoolSlot:
    """One pydamon-owned kdamond: its index, the pid of the pydamon process using it (None:
    free), and its kernel state."""

    index: int
    owner_pid: int | None
    root: str
    state: str = "off"
    kdamond_pid: int | None = None

    @property
    def orphan(self) -> bool:
        return self.owner_pid is not None and not pid_alive(self.owner_pid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kdamond": self.index,
            "owner_pid": self.owner_pid,
            "root": self.root,
            "state": self.state,
            "kdamond_pid": self.kdamond_pid,
            "orphan": self.orphan,
        }


class KdamondPool:
    """The pool file at ``path`` (default :func:`pydamon.runstate.kdamond_pool_path`), one
    entry per sysfs root."""

    def __init__(self, path: str | None = None, slots: int = POOL_SLOTS) -> None:
        self.path = path or kdamond_pool_path()
        self.slots = slots

    # -- the file ---------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The pool's data, under an exclusive lock, written back when the block ends."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            before = json.dumps(data, sort_keys=True)
            yield data
            if not data:  # no kdamond left: no file (``status`` then looks no further)
                if os.path.exists(self.path):
                    os.unlink(self.path)
            elif json.dumps(data, sort_keys=True) != before:
                tmp = f"{self.path}.tmp.{os.getpid()}"
                with open(tmp, "w") as f:
                    json.dump(data, f, indent=1)
                os.replace(tmp, self.path)

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _entry(data: dict[str, Any], sysfs: DamonSysfs) -> dict[str, Any] | None:
        """This root's entry if it still describes the tree (else it is dropped)."""
        root = os.path.realpath(sysfs.fs.root)
        entry = data.get(root)
        if entry is None:
            return None
        if entry.get("nr_kdamonds") != sysfs.nr_kdamonds():
            del data[root]  # someone rewrote nr_kdamonds: those kdamonds are not ours any more
            return None
        return dict(entry)

    # -- reading ----------------------------------------------------------------------------------
    def owned(self, sysfs: DamonSysfs) -> set[int]:
        with self._locked() as data:
            entry = self._entry(data, sysfs)
        return {int(k) for k in entry["slots"]} if entry else set()

    def foreign(self, sysfs: DamonSysfs) -> list[int]:
        """Kdamonds under ``sysfs`` that pydamon did not create."""
        owned = self.owned(sysfs)
        return [k for k in range(sysfs.nr_kdamonds()) if k not in owned]

    def slots_of(self, sysfs: DamonSysfs) -> list[PoolSlot]:
        with self._locked() as data:
            entry = self._entry(data, sysfs)
        if not entry:
            return []
        out = []
        for key, owner in sorted(entry["slots"].items(), key=lambda kv: int(kv[0])):
            k = int(key)
            slot = PoolSlot(k, owner, sysfs.fs.root)
            try:
                status = DamonSysfs(sysfs.fs.root, sysfs.fs.io, owned={k}).status(k)
                slot.state, slot.kdamond_pid = status.state, status.pid
            except KernelSysfsError:
                slot.state = "gone"
            out.append(slot)
        return out

    def orphans(self, sysfs: DamonSysfs) -> list[PoolSlot]:
        """Slots whose pydamon owner died (``kill -9``)."""
        return [s for s in self.slots_of(sysfs) if s.orphan]

    # -- changing ---------------------------------------------------------------------------------
    def acquire(self, sysfs: DamonSysfs) -> int:
        """A free pydamon kdamond for this process (created with the pool when there is none).

        ``sysfs.owned`` becomes the pool's kdamonds. Refuses, changing nothing, when a kdamond
        pydamon did not create exists.
        """
        with self._locked() as data:
            entry = self._entry(data, sysfs)
            nr = sysfs.nr_kdamonds()
            owned = {int(k) for k in entry["slots"]} if entry else set()
            foreign = [k for k in range(nr) if k not in owned]
            if foreign:
                listed = ", ".join(str(k) for k in foreign)
                raise KdamondNotOwned(
                    f"{sysfs.fs.path('kdamonds')} has kdamond(s) {listed} that pydamon did not "
                    "create; pydamon leaves the kernel's DAMON alone (writing nr_kdamonds would "
                    "recreate them)"
                )
            sysfs.owned |= owned
            slots: dict[str, int | None] = dict(entry["slots"]) if entry else {}
            for key in sorted(slots, key=int):
                owner = slots[key]
                k = int(key)
                if (owner is None or not pid_alive(owner)) and sysfs.state(k) == "off":
                    return self._take(data, sysfs, slots, k)
            if slots:
                raise KernelSysfsError(
                    f"all {len(slots)} pydamon kdamonds at {sysfs.fs.path('kdamonds')} are in "
                    "use (the kernel cannot add kdamonds while one runs); stop one "
                    "('pydamon status', 'pydamon stop') and try again"
                )
            sysfs.owned = set()
            new = sysfs.add_kdamonds(self.slots)
            slots = {str(k): None for k in new}
            return self._take(data, sysfs, slots, new[0])

    def _take(
        self, data: dict[str, Any], sysfs: DamonSysfs, slots: dict[str, int | None], k: int
    ) -> int:
        slots[str(k)] = os.getpid()
        data[os.path.realpath(sysfs.fs.root)] = {
            "root": sysfs.fs.root,
            "nr_kdamonds": sysfs.nr_kdamonds(),
            "slots": slots,
        }
        sysfs.owned |= {int(s) for s in slots}
        return k

    def release(self, sysfs: DamonSysfs, k: int) -> None:
        """Free slot ``k`` (its kdamond off); the last one free takes the pool's kdamonds away."""
        with self._locked() as data:
            entry = self._entry(data, sysfs)
            if not entry or str(k) not in entry["slots"]:
                return
            slots = dict(entry["slots"])
            slots[str(k)] = None
            if sysfs.state(k) == "off":
                # empty, so the next user's probe can stage its configuration in it
                sysfs.fs.write(join("kdamonds", k, "contexts/nr_contexts"), 0)
            root = os.path.realpath(sysfs.fs.root)
            busy = [s for s, owner in slots.items() if owner is not None and pid_alive(owner)]
            if not busy and all(sysfs.state(int(s)) == "off" for s in slots):
                sysfs.fs.write("kdamonds/nr_kdamonds", 0)
                sysfs.owned -= {int(s) for s in slots}
                del data[root]
            else:
                entry["slots"] = slots
                data[root] = entry

    def stop_orphans(self, sysfs: DamonSysfs) -> list[PoolSlot]:
        """Turn off the kdamonds of dead owners and free their slots; returns them."""
        orphans = self.orphans(sysfs)
        for slot in orphans:
            sysfs.owned.add(slot.index)
            if slot.state == "on":
                sysfs.stop(slot.index)
            self.release(sysfs, slot.index)
        return orphans

"""Sessions and their object stores.

A client opens a session with `hello` and names every tensor it creates with its own
handle ids (so it can queue ops without waiting for replies). Handles are only
meaningful within their session: a session id the runtime does not know — because it was
closed, or because the runtime restarted — fails fast with E_SESSION.
"""

from __future__ import annotations

import secrets

import torch

from .errors import RuntimeFault


class Session:
    __slots__ = ("sid", "objects", "_gen", "created_ops")

    def __init__(self, sid: str):
        self.sid = sid
        self.objects: dict[int, object] = {}  # handle id -> torch.Tensor (or an adopted object)
        self._gen: torch.Generator | None = None
        self.created_ops = 0

    def get(self, hid: int):
        try:
            return self.objects[hid]
        except KeyError:
            raise RuntimeFault(
                "E_HANDLE",
                f"handle {hid} does not exist in this session: it was never created, was freed, "
                "or the op that would have made it failed",
                handle=hid,
            ) from None

    def put(self, hid: int, obj) -> None:
        self.objects[hid] = obj

    def free(self, hids) -> None:
        pop = self.objects.pop
        for h in hids:
            pop(h, None)

    def generator(self, device: torch.device) -> torch.Generator:
        """The session's own random stream (seeded by the `manual_seed` op)."""
        if self._gen is None:
            self._gen = torch.Generator(device=device)
            self._gen.seed()
        return self._gen

    def seed(self, device: torch.device, seed: int) -> None:
        self._gen = torch.Generator(device=device)
        self._gen.manual_seed(seed)

    def __len__(self) -> int:
        return len(self.objects)


class Sessions:
    def __init__(self):
        self._by_id: dict[str, Session] = {}

    def open(self) -> Session:
        s = Session(secrets.token_hex(8))
        self._by_id[s.sid] = s
        return s

    def get(self, sid) -> Session:
        s = self._by_id.get(sid) if isinstance(sid, str) else None
        if s is None:
            raise RuntimeFault("E_SESSION", f"session {sid!r} is not open in this runtime (closed, or the "
                               "runtime was restarted); open a new one and recreate its tensors")
        return s

    def close(self, sid) -> int:
        s = self._by_id.pop(sid, None)
        if s is None:
            return 0
        n = len(s)
        # A stored program points back at its session (for the random stream), a cycle the
        # frozen, rarely-run collector would keep alive: drop the objects now.
        s.objects.clear()
        s._gen = None
        return n

    def __len__(self) -> int:
        return len(self._by_id)

    def stats(self) -> dict:
        return {"sessions": len(self._by_id), "objects": sum(len(s) for s in self._by_id.values())}

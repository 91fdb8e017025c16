"""Sessions and their object stores.

A client opens a session with `hello` and names every tensor it creates with its own
handle ids (so it can queue ops without waiting for replies). Handles are only
meaningful within their session: a session id the runtime does not know — because it was
closed, expired or because the runtime restarted — fails fast with E_SESSION.

A shared runtime must survive clients that vanish without `close`: sessions are capped in
number (`max_sessions`) and a session nobody has used for `idle_s` seconds (a batch, or a
ping naming it) is closed, its objects freed.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict

import torch

from .errors import RuntimeFault


class Session:
    __slots__ = ("sid", "objects", "_gen", "created_ops", "last_used")

    def __init__(self, sid: str):
        self.sid = sid
        self.last_used = 0.0  # the Sessions clock's time of the last request naming it
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


# how many expired session ids are remembered, so that their clients learn why they are gone
_EXPIRED_MEMORY = 4096


class Sessions:
    def __init__(self, max_sessions: int = 64, idle_s: float = 900.0, clock=None):
        self.max_sessions = max_sessions
        self.idle_s = idle_s  # 0: never expire
        self._clock = clock or time.monotonic
        # least recently used first: expiry pops from the front and stops at the first live one
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._expired: OrderedDict[str, float] = OrderedDict()  # sid -> idle seconds when it expired

    def open(self) -> Session:
        self.expire()
        if len(self._by_id) >= self.max_sessions:
            raise RuntimeFault("E_LIMIT", f"this runtime already has {len(self._by_id)} open sessions, its "
                               f"max_sessions of {self.max_sessions}: close unused clients, or start the runtime "
                               "with a larger --max-sessions (LIAISON_MAX_SESSIONS)",
                               limit="max_sessions", value=self.max_sessions)
        s = Session(secrets.token_hex(8))
        s.last_used = self._clock()
        self._by_id[s.sid] = s
        return s

    def get(self, sid) -> Session:
        """The open session `sid`, its idle clock restarted."""
        if not isinstance(sid, str):
            raise RuntimeFault("E_PROTOCOL", f"header field 'sid' must be the session id string from hello, got "
                               f"{type(sid).__name__}")
        self.expire()
        s = self._by_id.get(sid)
        if s is None:
            idle = self._expired.get(sid)
            if idle is not None:
                raise RuntimeFault("E_SESSION", f"session {sid!r} expired after {idle:g} s idle and its objects "
                                   "were freed (the runtime's --session-idle-s); open a new one and recreate its "
                                   "tensors, and ping with the session id to keep an idle client's session")
            raise RuntimeFault("E_SESSION", f"session {sid[:64]!r} is not open in this runtime (closed, or the "
                               "runtime was restarted); open a new one and recreate its tensors")
        self.touch(s)
        return s

    def touch(self, s: Session) -> None:
        """Restart s's idle clock: a request naming it arrived, or one of its batches ended
        (a batch that ran for longer than idle_s must not leave its session to expire)."""
        s.last_used = self._clock()
        if s.sid in self._by_id:
            self._by_id.move_to_end(s.sid)

    def expire(self) -> int:
        """Close the sessions idle for longer than idle_s; returns how many."""
        if not self.idle_s or not self._by_id:
            return 0
        cutoff = self._clock() - self.idle_s
        n = 0
        while self._by_id:
            s = next(iter(self._by_id.values()))
            if s.last_used >= cutoff:
                break
            self._drop(s.sid)
            self._expired[s.sid] = self.idle_s
            if len(self._expired) > _EXPIRED_MEMORY:
                self._expired.popitem(last=False)
            n += 1
        return n

    def close(self, sid) -> int:
        """Close an open session; returns how many objects it held."""
        self.get(sid)  # E_PROTOCOL / E_SESSION as for any request naming a session
        return self._drop(sid)

    # called with a session's id when it is closed or expires (a served script's disconnect)
    on_drop = None

    def _drop(self, sid: str) -> int:
        s = self._by_id.pop(sid)
        if self.on_drop is not None:
            self.on_drop(sid)
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

"""Runs decoded requests against the sessions: the runtime without its sockets.

`Executor.handle(header, buffers)` returns `(reply_header, reply_buffers, aliases)`;
`aliases` are the stored tensors whose memory the reply buffers point into, so the
server can hold in-place writes to them until the send is done.
"""

from __future__ import annotations

import errno
import os
import traceback
from time import perf_counter

import torch

from . import __version__, group, transfer
from .errors import RuntimeFault, classify
from .ops import OPS
from .ops.registry import DTYPE_NAMES, Ctx
from .protocol import MINOR, Handle
from .session import Sessions

DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
DEFAULT_MAX_SESSIONS = 64
DEFAULT_SESSION_IDLE_S = 900.0

_EMPTY: dict = {}


def _well_formed(rec: dict) -> bool:
    out, args, kw = rec.get("out"), rec.get("args"), rec.get("kw")
    return (isinstance(rec.get("op"), str) and isinstance(out, list) and all(type(h) is Handle for h in out)
            and (args is None or isinstance(args, list)) and (kw is None or isinstance(kw, dict)))


def _handles(v, what: str) -> list[int]:
    if type(v) is list:  # one pass for the usual case: a batch frees about as many handles as it has ops
        ids = [h.id for h in v if type(h) is Handle]
        if len(ids) == len(v):
            return ids
    if not isinstance(v, list) or not all(isinstance(h, Handle) for h in v):
        raise RuntimeFault("E_PROTOCOL", f"batch field '{what}' must be a list of handles")
    return [h.id for h in v]


class Executor:
    def __init__(self, device: torch.device, shm: bool = False, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_sessions: int = DEFAULT_MAX_SESSIONS, session_idle_s: float = DEFAULT_SESSION_IDLE_S,
                 clock=None):
        self.device = device
        self.shm = shm  # may tensors travel through /dev/shm files (same host only)
        # a reply is held to the size the client may send: both ends then budget one number
        self.max_message_bytes = max_message_bytes
        self.sessions = Sessions(max_sessions, session_idle_s, clock)
        self.adoptable: dict[int, object] = {}  # objects handed over by the embedded pythonia hatch
        # ops outside the table that only this runtime has: name -> fn(ctx, session, args, kw)
        # (a served script's, liaison_runtime/serve.py); empty for the plain runtime
        self.extra_ops: dict = {}
        self.ops_run = 0

    # ---- request kinds ----

    def handle(self, header: dict, buffers: list):
        kind = header["kind"]
        if kind == "batch":
            return self._batch(header, buffers)
        if kind == "ping":
            if "sid" in header:  # a client's heartbeat keeps its idle session open
                self.sessions.get(header["sid"])
            else:
                self.sessions.expire()
            return {"stats": self.stats()}, [], []
        if kind == "hello":
            s = self.sessions.open()
            reply = {
                "sid": s.sid, "minor": MINOR, "runtime": __version__, "torch": torch.__version__,
                "device": str(self.device), "cuda": self.device.type == "cuda", "pid": os.getpid(),
                "threads": torch.get_num_threads(),
                "shm": self.shm, "ops": sorted(OPS) + ["upload", "adopt"], "stats": self.stats(),
                "limits": self.limits(),
            }
            g = group.hello_info()  # a group rank only: rank, world size, every rank's endpoint
            if g is not None:
                reply["group"] = g
            return reply, [], []
        if kind == "close":
            return {"freed": self.sessions.close(header.get("sid"))}, [], []
        if kind == "shutdown":
            return {}, [], []
        raise RuntimeFault("E_PROTOCOL", f"unknown kind {kind!r}")

    def stats(self) -> dict:
        return {**self.sessions.stats(), "ops_run": self.ops_run, "collectives": group.counters()}

    def limits(self) -> dict:
        idle = self.sessions.idle_s
        # the wire writes an integral number as an integer (a float64 only for a fraction)
        return {"max_message_bytes": self.max_message_bytes, "max_sessions": self.sessions.max_sessions,
                "session_idle_s": int(idle) if float(idle).is_integer() else idle}

    def _batch(self, header: dict, buffers: list):
        sess = self.sessions.get(header.get("sid"))
        ops = header.get("ops") or []
        if not isinstance(ops, list):
            raise RuntimeFault("E_PROTOCOL", "batch field 'ops' must be a list")
        reads = _handles(header.get("reads") or [], "reads")
        metas = _handles(header.get("meta") or [], "meta")
        free = _handles(header.get("free") or [], "free")
        ctx = Ctx(self.device, sess, self.before_inplace)
        t0 = perf_counter()
        ran = [0]
        try:
            self._run_all(ctx, sess, ops, buffers, ran)
            reply, bufs, aliases = self._reads(sess, reads, header)
            if metas:
                reply["meta"] = [self._meta(sess.get(h)) for h in metas]
            reply["n"] = len(ops)
            reply["us"] = round((perf_counter() - t0) * 1e6)
            return reply, bufs, aliases
        finally:
            self.ops_run += ran[0]
            sess.free(free)
            self.sessions.touch(sess)

    def _run_all(self, ctx: Ctx, sess, ops: list, buffers, ran: list) -> None:
        """Run every op record of a batch; `ran[0]` says how many ran (all, or those before the one that failed).

        The per-op cost is what bench bridge.batched_ops measures, so the most common record
        (a table op that is not in place, positional arguments its fast binder accepts, one
        result) runs inline here; anything else, and any record this loop is unsure of, goes
        through `_run`, which checks every field. Both fail the same way (`_fault`).
        """
        objects = sess.objects
        ops_get = OPS.get
        run = self._run
        handle_t = Handle
        tensor_t = torch.Tensor
        n = len(ops)
        i = 0
        try:
            while i < n:
                rec = ops[i]
                if type(rec) is dict:
                    name = rec.get("op")
                    d = ops_get(name) if type(name) is str else None
                    if d is not None and d._fast is not None and not d.inplace and not rec.get("kw"):
                        args = rec.get("args")
                        out = rec.get("out")
                        if (type(args) is list and type(out) is list and len(out) == 1 and len(args) == len(d._plan)
                                and type(out[0]) is handle_t):
                            bound = d._fast(args, objects)
                            if bound is not None:
                                try:
                                    result = d.fn(ctx, *bound)
                                except Exception as e:  # noqa: BLE001 — as in _run: a typed error for each failure
                                    raise self._fault(e, rec, name, i) from None
                                if type(result) is tensor_t:
                                    objects[out[0].id] = result
                                    i += 1
                                    continue
                                try:
                                    self._store(name, out, result, objects)
                                except Exception as e:  # noqa: BLE001
                                    raise self._fault(e, rec, name, i) from None
                                i += 1
                                continue
                run(ctx, sess, rec, buffers, i)
                i += 1
        finally:
            ran[0] = i  # on a failure: the ops before the one that failed

    def _run(self, ctx: Ctx, sess, rec, buffers, index: int) -> None:
        # Any op record (the common one also runs inline in _run_all). Field checks happen where
        # the values are used, and a malformed record surfaces as the KeyError/TypeError/
        # AttributeError it causes.
        name = None
        try:
            name = rec["op"]
            out = rec["out"]
            args = rec.get("args") or ()
            kw = rec.get("kw") or _EMPTY
            if type(args) is not list and args != () or type(kw) is not dict:
                raise TypeError("args/kw")
            d = OPS.get(name) if type(name) is str else None
            if d is None:
                result = self._special(ctx, sess, name, args, kw, buffers)
            else:
                bound = d.bind_args(args, kw, sess)
                if d.inplace and self.before_inplace is not None:
                    for v in bound:
                        if isinstance(v, torch.Tensor):
                            self.before_inplace(v)
                            break
                result = d.fn(ctx, *bound)
            self._store(name, out, result, sess.objects)
        except Exception as e:  # noqa: BLE001 — every failure must go back as a typed error
            raise self._fault(e, rec, name, index) from None

    @staticmethod
    def _store(name, out, result, objects) -> None:
        """Put an op's result(s) under the handles its record names."""
        if type(result) is tuple or type(result) is list:
            if len(result) != len(out):
                raise RuntimeFault("E_ARG", f"{name}: makes {len(result)} outputs but the request names "
                                   f"{len(out)} handles for them")
            for h, r in zip(out, result, strict=True):
                objects[h.id] = r
        else:
            if len(out) != 1:
                raise RuntimeFault("E_ARG", f"{name}: makes 1 output but the request names {len(out)} handles")
            h = out[0]
            if type(h) is not Handle:
                raise AttributeError("out")
            objects[h.id] = result

    def _fault(self, e: Exception, rec, name, index: int) -> RuntimeFault:
        """The typed error for op record `index` failing with `e`."""
        if isinstance(e, RuntimeFault):
            e.extra.setdefault("index", index)
            e.extra.setdefault("op", str(name))
            return e
        if isinstance(e, (KeyError, AttributeError, TypeError)):
            # a record that breaks the protocol's shape is the sender's fault; otherwise the
            # op itself raised one of these
            if not isinstance(rec, dict) or not _well_formed(rec):
                return RuntimeFault("E_PROTOCOL", f"op record {index} ({name!r}) must be a map {{op: str, "
                                    "out: [handles], args: [...], kw: {...}}", index=index, op=str(name))
        return self._wrap(e, name, index)

    @staticmethod
    def _wrap(e: Exception, name, index: int) -> RuntimeFault:
        # ArithmeticError: an op's Python arithmetic on the caller's numbers (a zero size, a
        # value beyond the dtype) is the caller's to fix, not a runtime bug
        if isinstance(e, (RuntimeError, ValueError, IndexError, TypeError, MemoryError, ArithmeticError)):
            f = classify(e, str(name))
        else:
            f = RuntimeFault("E_INTERNAL", f"{name}: {type(e).__name__}: {e}", traceback=traceback.format_exc())
        f.extra.update(index=index, op=str(name))
        return f

    def _special(self, ctx: Ctx, sess, name, args, kw, buffers):
        """The ops that are not in the table: they touch frames, files or the hatch."""
        if name == "upload":
            if "shm" in kw:
                if not self.shm:
                    raise RuntimeFault("E_ARG", "upload: shared memory is not enabled on this runtime")
                return transfer.from_shm(kw, self.device)
            return transfer.from_frame(kw, buffers, self.device)
        if name in self.extra_ops:  # a served script's own ops (serve.py)
            return self.extra_ops[name](ctx, sess, args, kw)
        if name == "adopt":
            key = kw.get("key")
            obj = self.adoptable.pop(key, None) if isinstance(key, int) else None
            if obj is None:
                raise RuntimeFault("E_ARG", f"adopt: no object was stashed under key {key!r}")
            return obj.to(self.device) if isinstance(obj, (torch.Tensor, torch.nn.Module)) else obj
        raise RuntimeFault("E_UNKNOWN_OP", f"unknown op {name!r}: the runtime's op table has no such op")

    before_inplace = None  # set by the server: waits until no pending send reads this memory

    def _reads(self, sess, reads: list[int], header: dict):
        out, bufs, aliases = [], [], []
        shm = header.get("shm") if self.shm else None
        shm_dir = shm.get("dir") if isinstance(shm, dict) else None
        shm_min = shm.get("min", 1 << 20) if isinstance(shm, dict) else None
        tensors = [self._readable(sess, h) for h in reads]
        # A read copies a tensor into one contiguous buffer: an expanded view of a few bytes
        # can stand for terabytes. Size them all before anything is allocated.
        total = sum(t.numel() * t.element_size() for t in tensors)
        if total > self.max_message_bytes:
            raise RuntimeFault("E_LIMIT", f"read: the {len(tensors)} tensor(s) asked for make {total} bytes, over "
                               f"this runtime's max_message_bytes of {self.max_message_bytes}: read smaller "
                               "slices, or start the runtime with a larger --max-message-bytes "
                               "(LIAISON_MAX_MESSAGE_BYTES)", limit="max_message_bytes",
                               value=self.max_message_bytes, size=total)
        for k, (h, obj) in enumerate(zip(reads, tensors, strict=True)):
            try:
                name, shape, arr, alias = transfer.to_bytes(obj)
            except (MemoryError, RuntimeError) as e:  # the copy of a view, or the move off the GPU
                f = classify(e, "read")
                f.extra["handle"] = h
                raise f from None
            if shm_dir is not None and isinstance(shm_min, int) and arr.nbytes >= shm_min:
                path = f"{shm_dir}/r{header['id']}-{k}"
                try:
                    transfer.to_shm(arr, path)
                except OSError as e:  # /dev/shm full, or a request id reused in the client's folder
                    full = e.errno in (errno.ENOSPC, errno.ENOMEM)
                    raise RuntimeFault("E_OOM" if full else "E_ARG", f"read: cannot write {arr.nbytes} bytes to "
                                       f"the shared-memory file {path}: {e.strerror}", handle=h) from None
                out.append({"dtype": name, "shape": shape, "shm": path})
            else:
                out.append({"dtype": name, "shape": shape, "frame": len(bufs)})
                bufs.append(arr)
                if alias:
                    aliases.append(obj)
        return ({"reads": out} if reads else {}), bufs, aliases

    @staticmethod
    def _readable(sess, h: int) -> torch.Tensor:
        obj = sess.get(h)
        if not isinstance(obj, torch.Tensor):
            raise RuntimeFault("E_ARG", f"read: handle {h} holds a {type(obj).__name__}, not a tensor", handle=h)
        return obj

    @staticmethod
    def _meta(obj) -> dict:
        if isinstance(obj, torch.Tensor):
            return {"dtype": DTYPE_NAMES.get(obj.dtype, str(obj.dtype)), "shape": list(obj.shape),
                    "device": str(obj.device)}
        from .models import Described, describe_module
        from .program import Program

        if isinstance(obj, (Program, Described)):  # what they hold
            return {"type": type(obj).__name__, **obj.describe()}
        if isinstance(obj, torch.nn.Module):  # from a factory, or adopted through the hatch
            return {"type": type(obj).__name__, **describe_module(obj)}
        return {"type": type(obj).__name__}

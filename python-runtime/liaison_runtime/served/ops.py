"""The ops a served script adds to its runtime (liaison_runtime/serve.py): the service
attaches, gets a served model by name, stages installs and uninstalls, acknowledges
loop-point events, follows loop points, says it is ready; and what a disconnect does.
They run on the server's thread, under the lock (a mixin of `Service`)."""

from __future__ import annotations

import logging

from ..errors import RuntimeFault
from ..program import Program
from .parts import LOOP, TRACED, Info, Installed

log = logging.getLogger("liaison_runtime.serve")


class ServiceOps:
    def _op_attach(self, ctx, sess, args, kw):
        if self._client is not None and self._client != sess.sid:
            raise RuntimeFault("E_ARG", "serve_attach: another service is attached to this script; one at a time")
        self._client = sess.sid
        return Info(self._info())

    def _attached(self, sess, op: str) -> None:
        # the other ops belong to the one attached service: a second session of the same user
        # (or key holder) must not install into a script another service is driving
        if sess.sid != self._client:
            raise RuntimeFault("E_ARG", f"{op}: this session is not the service attached to the script "
                               "(serve_attach first; one service at a time)")

    def _model_name(self, name, op: str) -> str:
        if name not in self.models:
            raise RuntimeFault("E_ARG", f"{op}: this script serves no model named {name!r}; it serves "
                               f"{', '.join(repr(n) for n in self.models)}", param="name")
        return name

    def _op_model(self, ctx, sess, args, kw):
        self._attached(sess, "serve_model")
        return self.models[self._model_name(kw.get("name", args[0] if args else None), "serve_model")]

    def _op_install(self, ctx, sess, args, kw):
        """serve_install(key, model, points={point: program}, loss=program, update=program,
        params=[names], state={name: {k: tensor}}, loops=[points], lr=number): staged; active
        from the next step on (replacing an install under the same key)."""
        self._attached(sess, "serve_install")
        key = kw.get("key")
        if not isinstance(key, str) or not key:
            raise RuntimeFault("E_ARG", "serve_install: key must be a non-empty string", param="key")
        for field, kind in (("points", dict), ("state", dict), ("params", list), ("loops", list)):
            if kw.get(field) is not None and not isinstance(kw[field], kind):
                raise RuntimeFault("E_ARG", f"serve_install: {field} must be a {'map' if kind is dict else 'list'}, "
                                   f"got {type(kw[field]).__name__}", param=field)
        inst = Installed(key, self._model_name(kw.get("model"), "serve_install"))

        def program(v, what):
            h = sess.get(v.id) if hasattr(v, "id") else None
            if not isinstance(h, Program):
                raise RuntimeFault("E_ARG", f"serve_install: {what} must be a program handle", param=what)
            return h

        for point, h in (kw.get("points") or {}).items():
            if point not in TRACED:
                raise RuntimeFault("E_ARG", f"serve_install: no traced point {point!r}; there are {', '.join(TRACED)}",
                                   param="points")
            inst.points[point] = program(h, "points")
        if kw.get("loss") is not None:
            inst.loss = program(kw["loss"], "loss")
        if kw.get("update") is not None:
            inst.update = program(kw["update"], "update")
            names = kw.get("params") or []
            if not all(isinstance(n, str) for n in names):
                raise RuntimeFault("E_ARG", "serve_install: params must be parameter names (strings)", param="params")
            known = self._param_names[inst.model]
            bad = [n for n in names if n not in known]
            if bad:
                raise RuntimeFault("E_ARG", f"serve_install: the optimizer holds no parameter {bad[0]!r} of "
                                   f"model {inst.model!r}", param="params")
            inst.params = list(names)
            state = kw.get("state") or {}
            if not all(isinstance(state.get(n, {}), dict) and all(hasattr(h, "id") for h in state.get(n, {}).values())
                       for n in names):
                raise RuntimeFault("E_ARG", "serve_install: state must map each parameter name to "
                                   "{name: tensor handle}", param="state")
            inst.state = {n: {k: sess.get(h.id) for k, h in state.get(n, {}).items()} for n in names}
            lr = kw.get("lr")
            inst.lr = float(lr) if isinstance(lr, (int, float)) else None
        loops = kw.get("loops") or []
        if any(p not in LOOP for p in loops):
            raise RuntimeFault("E_ARG", f"serve_install: loops must name points among {', '.join(LOOP)}", param="loops")
        inst.loops = tuple(loops)
        with self._pending_lock:
            self._pending[key] = inst
        return Info({"key": key, "staged": True})

    def _op_uninstall(self, ctx, sess, args, kw):
        self._attached(sess, "serve_uninstall")
        key = kw.get("key")
        with self._pending_lock:
            if key not in self._installed and key not in self._pending:
                raise RuntimeFault("E_ARG", f"serve_uninstall: nothing is installed under {key!r}", param="key")
            self._pending[key] = None
        return Info({"key": key, "staged": True})

    def _op_ack(self, ctx, sess, args, kw):
        self._attached(sess, "serve_ack")
        with self._ev_lock:
            ack = self._acks.get(kw.get("id"))
        if ack is not None:
            ack[1] = kw.get("error")
            ack[0].set()
        return Info({"acked": ack is not None})

    def _op_watch(self, ctx, sess, args, kw):
        """serve_watch(points): the service wants these loop points' events even with no hook there
        (to follow training: the metrics the script passes)."""
        self._attached(sess, "serve_watch")
        points = kw.get("points") or []
        if not isinstance(points, list) or any(p not in LOOP for p in points):
            raise RuntimeFault("E_ARG", f"serve_watch: points must name loop points among {', '.join(LOOP)}",
                               param="points")
        self._watch = frozenset(points)
        return Info({"watching": sorted(self._watch)})

    def _op_ready(self, ctx, sess, args, kw):
        self._attached(sess, "serve_ready")
        self._ready.set()
        return Info({"ready": True})

    def _dropped(self, sid: str) -> None:
        """A session closed or expired (on the server's thread)."""
        if sid != self._client:
            return
        self._client = None
        self._watch = frozenset()
        log.warning("liaison: the service disconnected (%s)", "stopping" if self.on_disconnect == "stop" else
                    "going on with the installed plugins")
        if self.on_disconnect == "stop":
            self.stopped = True
        self._ready.set()  # a serve(wait_for_client=...) still waiting goes on
        with self._ev_lock:  # nobody will answer the events now
            self._events.clear()
            for ack in self._acks.values():
                ack[1] = "the service disconnected"
                ack[0].set()

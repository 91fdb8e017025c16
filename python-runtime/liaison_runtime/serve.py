"""Serve a PyTorch script's own model to a TypeScript service: plugins in a loop you already have.

```python
svc = liaison_runtime.serve(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05))
opt = svc.optimizer                       # use it where the script used its optimizer
for x, y in batches:
    opt.zero_grad()                       # a step begins: 'beforeStep' programs
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()                            # 'afterBackward', the update, 'afterOptimizerStep'
svc.epoch_end(epoch)                      # the service's epochEnd hooks (a pruning event)
```

The ordinary `Server` runs on a daemon thread of the script's interpreter (as embedded.py
runs it for pythonia); a service connects, sees the models by name (`serve_model`), and
installs plugins: programs it traced (program.py), stored here and replayed by the script's
own thread at the step moments — never a round trip to TypeScript per step.

Synchronization: one lock (`svc.lock`). The server's thread runs a client's request only
while holding it, and a step holds it from its first moment (`zero_grad()` or
`before_step()`; else `after_backward()`) to its last (the end of `optimizer.step()`), so
the service's ops land between steps, never inside one. An install is staged and made
active when the next step begins: its programs all run from that step on, or none do. A
waiting request is let in before the script's next step takes the lock again (the
`_Turns` below), so the loop cannot starve the service.
A served liaison GPT decodes through `svc.generate` / `svc.kv_eval` (served/decoding.py)
with the KV policy the service installed at its `kv` hook point; a decoding holds the lock
as a step does, so a policy installed meanwhile is used from the next decoding on.

Loop points (`epoch_end`, `evaluation`, `fit_end`) are where the service's TypeScript runs
(a pruner's event): the script queues an event, the server answers the service's long poll
(a `ping` carrying `events: <wait ms>` and the session id, answered when an event is there
or its wait is up; a plain runtime answers it at once, as any ping) on its own
thread, and the script waits — only there, at most `event_timeout` seconds, and not at all
when no service with hooks at that point is attached. Disconnect: the service's session
closes or expires (`idle_timeout` seconds without a request; a live client pings every
5 s); then `on_disconnect` applies.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import tempfile
import threading
import types
import warnings
from collections.abc import Callable

import torch

from . import policy
from .program import Program
from .served.decoding import ServiceDecoding
from .served.ops import ServiceOps
from .served.optimizer import PluginOptimizer
from .served.parts import TRACED, Installed, ServedServer, Turns
from .server import remove_ipc_files


class ServiceStopped(RuntimeError):
    """Raised by the next step after the service disconnected, when serve(on_disconnect="stop")."""

class Service(ServiceOps, ServiceDecoding):
    """A served script's end: the step moments, the loop points, the lock, the optimizer, the
    cached decoding of a served GPT (`generate`, `kv_eval`: served/decoding.py)."""

    def __init__(self, models: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None,
                 endpoint: str | None, key: bytes | None, on_disconnect: str, idle_timeout: float,
                 event_timeout: float, steps_per_epoch: int | None):
        if on_disconnect not in ("continue", "stop"):
            raise ValueError(f"serve: on_disconnect must be 'continue' or 'stop', got {on_disconnect!r}")
        if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int) or steps_per_epoch < 1):
            raise ValueError(f"serve: steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
        self.models = models
        self.on_disconnect = on_disconnect
        self.event_timeout = float(event_timeout)
        self.steps_per_epoch = steps_per_epoch
        self.stopped = False
        self.steps = 0  # steps begun
        self.epoch = 0
        self._turns = Turns()
        self.lock = self._turns.lock
        self._in_step = False
        self._installed: dict[str, Installed] = {}  # active, in install order
        self._points: dict[str, list[Program]] = {}  # their programs by traced point
        self._updater: Installed | None = None  # the last installed optimizer plugin, which steps
        self._pending: dict[str, Installed | None] = {}  # staged (None: an uninstall)
        self._pending_lock = threading.Lock()
        self._client: str | None = None  # the attached service's session id
        self._watch: frozenset = frozenset()  # loop points the service follows without a hook there
        self._ready = threading.Event()
        self._events: list[dict] = []
        self._acks: dict[int, list] = {}  # event id -> [threading.Event, error or None]
        self._event_ids = 0
        self._ev_lock = threading.Lock()
        self._waiters: list[tuple] = []  # long polls: (ident, rid, deadline, sid); the loop thread's only
        first = next(iter(next(iter(models.values())).parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        self.device = device
        self._step_t = torch.zeros((), device=device)
        self._lr_t = torch.zeros((), device=device)
        self._lr = None
        own = optimizer.param_groups if optimizer is not None else None
        params = [p for g in own for p in g["params"]] if own else [p for m in models.values() for p in m.parameters()]
        self.optimizer = PluginOptimizer(self, params, optimizer)
        self._param_names = self._name_params(params)

        made_dir = None
        if endpoint is None:
            endpoint = os.environ.get("LIAISON_SERVE_ENDPOINT") or None
        if endpoint is None:
            made_dir = tempfile.mkdtemp(prefix="liaison-serve-")
            os.chmod(made_dir, 0o700)
            endpoint = f"ipc://{made_dir}/serve.sock"
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wake_r, self._wake_w = r, w
        try:
            server = ServedServer(self, endpoint, key=key, device=device, session_idle_s=idle_timeout)
        except SystemExit as e:
            raise RuntimeError(str(e)) from None
        server.exec.sessions.on_drop = self._dropped
        server.exec.extra_ops.update({
            "serve_attach": self._op_attach, "serve_model": self._op_model, "serve_install": self._op_install,
            "serve_uninstall": self._op_uninstall, "serve_ack": self._op_ack, "serve_ready": self._op_ready,
            "serve_watch": self._op_watch,
        })
        policy.set_policy(factories=True, files=True)  # the script's own user; as embedded.py
        self.server = server
        self.endpoint = server.bound
        self._thread = threading.Thread(target=server.serve_forever, name="liaison-serve", daemon=True)
        self._thread.start()
        atexit.register(remove_ipc_files, server.endpoint)
        self._closed = False

    # ---- what the service sees ----

    def _name_params(self, params: list[torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """model name -> {parameter name: tensor} for the parameters the optimizer holds."""
        ids = {id(p) for p in params}
        return {n: {k: p for k, p in m.named_parameters() if id(p) in ids} for n, m in self.models.items()}

    def _info(self) -> dict:
        return {"models": list(self.models), "pid": os.getpid(), "device": str(self.device), "step": self.steps,
                "epoch": self.epoch, "optimizer_params": {n: list(ps) for n, ps in self._param_names.items()},
                "installed": list(self._installed), "on_disconnect": self.on_disconnect}

    # ---- the step moments (the script's thread) ----

    def _enter_step(self) -> None:
        if self._in_step:
            return
        self._check_running()
        self._turns.step_acquire()
        self._in_step = True
        self.steps += 1
        self._step_t.fill_(self.steps)
        if self._pending:
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            for key, inst in pending.items():
                self._installed.pop(key, None)
                if inst is not None:
                    self._installed[key] = inst
                    if inst.update is not None:
                        self.optimizer._adopt_state(inst, self._param_names[inst.model])
            # each moment's programs, in install order: what a step replays
            self._points = {p: [i.points[p] for i in self._installed.values() if p in i.points] for p in TRACED}
            self._updater = next((i for i in reversed(self._installed.values()) if i.update is not None), None)

    def _check_running(self) -> None:
        if self.stopped:
            raise ServiceStopped("the service disconnected and this script was served with on_disconnect='stop'")

    def _leave_step(self) -> None:
        if self._in_step:
            self._in_step = False
            self.lock.release()

    def _run(self, point: str) -> None:
        progs = self._points.get(point)
        if not progs:
            return
        args = [self._lr_tensor(self.optimizer.param_groups[0]["lr"]), self._step_t]
        with torch.no_grad():
            for prog in progs:
                prog(args)

    def _lr_tensor(self, lr: float) -> torch.Tensor:
        if lr != self._lr:
            self._lr = lr
            self._lr_t.fill_(lr)
        return self._lr_t

    def _optimizer_plugin(self) -> Installed | None:
        return self._updater

    def before_step(self) -> None:
        """A step begins (before the forward): the 'beforeStep' programs; the step holds the lock from here.
        Once per step: inside a step already begun it does nothing (Lightning calls zero_grad()
        after the forward, when its callback began the step at the batch's start)."""
        if self._in_step:
            return
        self._enter_step()
        try:
            self._run("beforeStep")
        except BaseException:
            self._leave_step()
            raise

    def after_backward(self) -> None:
        """The gradients exist: the 'afterBackward' programs."""
        self._enter_step()
        try:
            self._run("afterBackward")
        except BaseException:
            self._leave_step()
            raise

    def after_optimizer_step(self) -> None:
        """The update is done: the 'afterOptimizerStep' programs (a pruner's masks held); the step ends."""
        self._enter_step()
        try:
            self._run("afterOptimizerStep")
        finally:
            self._leave_step()
        if self.steps_per_epoch and self.steps % self.steps_per_epoch == 0:
            self.epoch_end(self.steps // self.steps_per_epoch - 1)

    def step(self, closure: Callable | None = None):
        """== svc.optimizer.step(closure)."""
        return self.optimizer.step(closure)

    def extra_loss(self) -> torch.Tensor:
        """() the installed plugins' loss terms for the last forward, summed (0 when none): add
        it to the loss the script computes (`loss = loss + svc.extra_loss()`)."""
        total = torch.zeros((), device=self.device)
        args = [self._lr_tensor(self.optimizer.param_groups[0]["lr"]), self._step_t]
        for inst in list(self._installed.values()):
            if inst.loss is not None:
                total = total + inst.loss(args)[0]
        return total

    # ---- loop points: the service's TypeScript runs, the script waits ----

    def epoch_end(self, epoch: int | None = None, metrics: dict | None = None) -> None:
        """Epoch `epoch` (from 0) ended: the service's epochEnd hooks (a pruner's event) run now."""
        self.epoch = self.epoch if epoch is None else int(epoch)
        self._loop_point("epochEnd", metrics)
        self.epoch = self.epoch + 1

    def evaluation(self, metrics: dict) -> None:
        """An evaluation gave `metrics` ({'accuracy': …}): the service's evaluation hooks."""
        self._loop_point("evaluation", metrics)

    def fit_end(self, metrics: dict | None = None) -> None:
        """Training is over: the service's fitEnd hooks (an adapter merging itself)."""
        self._loop_point("fitEnd", metrics)

    def _loop_point(self, point: str, metrics: dict | None) -> None:
        if self._in_step:
            raise RuntimeError(f"liaison_runtime.serve: {point} inside a step (between zero_grad() and step()); "
                               "call it between steps")
        wanted = point in self._watch or any(point in i.loops for i in self._installed.values())
        if self._client is None or not wanted:
            return
        values = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float, torch.Tensor))}
        with self._ev_lock:
            self._event_ids += 1
            ev = {"id": self._event_ids, "point": point, "epoch": self.epoch, "step": self.steps, "metrics": values}
            ack = [threading.Event(), None]
            self._acks[ev["id"]] = ack
            self._events.append(ev)
        self._wake()
        try:
            if not ack[0].wait(self.event_timeout):
                warnings.warn(f"liaison: the service did not finish its {point} hooks within {self.event_timeout:g} s; "
                              "going on", stacklevel=3)
            elif ack[1]:
                warnings.warn(f"liaison: the service's {point} hooks failed: {ack[1]}", stacklevel=3)
        finally:
            with self._ev_lock:
                self._acks.pop(ev["id"], None)
                if ev in self._events:
                    self._events.remove(ev)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def _take_events(self) -> list[dict]:
        with self._ev_lock:
            evs, self._events = self._events, []
        return evs

    # ---- waiting for a client, closing ----

    def wait_for_client(self, timeout: float | None = None) -> bool:
        """Block until a service said it installed what it wanted (its `ready()`); False on timeout."""
        return self._ready.wait(timeout)

    @property
    def attached(self) -> bool:
        """A service is attached now."""
        return self._client is not None

    def close(self) -> None:
        """Stop serving; the installed plugins keep running in this process's steps."""
        if self._closed:
            return
        self._closed = True
        self._leave_step()
        self.server.stop()
        self._wake()
        self._thread.join(5)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

def serve(model: torch.nn.Module | dict, optimizer: torch.optim.Optimizer | None = None, *, name: str = "model",
          endpoint: str | None = None, key: bytes | str | None = None, on_disconnect: str = "continue",
          wait_for_client: float | None = None, steps_per_epoch: int | None = None,
          idle_timeout: float = 15.0, event_timeout: float = 300.0) -> Service:
    """Serve `model` (an nn.Module, or {name: module}) to a TypeScript service; returns the Service.

    endpoint: default an ipc socket in a private (0700) temp folder, or LIAISON_SERVE_ENDPOINT;
    tcp://… needs `key` (or LIAISON_KEY): every message is then signed. The endpoint is
    printed on stderr as `LIAISON_SERVING {json}` and written to the file
    LIAISON_SERVE_ENDPOINT_FILE names, if set. wait_for_client: seconds to block here until
    a service has installed what it wanted (its `ready()`); default: LIAISON_SERVE_WAIT if set
    (Service.launch sets it), else no wait. steps_per_epoch: call
    `epoch_end` by itself after every that many steps. idle_timeout: a service silent this
    long (no request, no heartbeat) is gone. event_timeout: the longest a loop point waits
    for the service's hooks."""
    models = model if isinstance(model, dict) else {name: model}
    if not models or not all(isinstance(m, torch.nn.Module) for m in models.values()):
        raise TypeError("serve: model must be a torch.nn.Module or a non-empty dict {name: nn.Module}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"serve: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    raw = key if key is not None else os.environ.get("LIAISON_KEY")
    kb = raw.encode() if isinstance(raw, str) else raw
    svc = Service(models, optimizer, endpoint, kb or None, on_disconnect, idle_timeout, event_timeout, steps_per_epoch)
    line = json.dumps({"endpoint": svc.endpoint, "models": list(models), "pid": os.getpid(), "device": str(svc.device)})
    print(f"LIAISON_SERVING {line}", file=sys.stderr, flush=True)
    path = os.environ.get("LIAISON_SERVE_ENDPOINT_FILE")
    if path:
        with open(path, "w") as f:
            f.write(svc.endpoint)
    if wait_for_client is None and os.environ.get("LIAISON_SERVE_WAIT"):
        wait_for_client = float(os.environ["LIAISON_SERVE_WAIT"])  # set by a service that launched this script
    if wait_for_client is not None and not svc.wait_for_client(wait_for_client):
        warnings.warn(f"liaison: no service became ready within {wait_for_client:g} s; training without plugins",
                      stacklevel=2)
    return svc


class _CallableModule(types.ModuleType):
    """`import liaison_runtime.serve` before `liaison_runtime.serve(...)` leaves the package's
    `serve` attribute naming this module (the import system sets it): calling it serves."""

    def __call__(self, *args, **kwargs) -> Service:
        return serve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

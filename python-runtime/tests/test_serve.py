"""liaison_runtime.serve: a script's own model served to a client that installs programs.

The client here is a bare DEALER speaking the protocol (the TypeScript side is
test/served.test.ts). Programs are written as op records by hand: an SGD update over the
model's parameters, a mask held after every step."""

import copy
import itertools
import threading

import pytest
import torch
import zmq

import liaison_runtime
from liaison_runtime.protocol import Handle, encode, unpack

_ids = itertools.count(1)
H = Handle


class Client:
    def __init__(self, endpoint: str):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 60_000)
        self.sock.connect(endpoint)
        self.sid = None
        self.next = itertools.count(1000)

    def send(self, kind: str, **fields) -> int:
        rid = next(_ids)
        header = {"v": 1, "id": rid, "kind": kind, **fields}
        if self.sid and kind in ("batch", "close", "ping"):
            header.setdefault("sid", self.sid)
        self.sock.send_multipart(encode(header))
        return rid

    def recv(self) -> dict:
        return unpack(self.sock.recv_multipart()[0])

    def request(self, kind: str, **fields) -> dict:
        self.send(kind, **fields)
        return self.recv()

    def ops(self, *records, meta=()) -> dict:
        r = self.request("batch", ops=list(records), meta=list(meta))
        assert r["ok"], r.get("error")
        return r

    def handle(self) -> Handle:
        return H(next(self.next))

    def close(self):
        self.sock.close(linger=0)


def op(opname, out, *args, **kw):
    rec = {"op": opname, "out": list(out), "args": list(args)}
    if kw:
        rec["kw"] = kw
    return rec


@pytest.fixture
def served(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    made = []

    def make(**kw):
        svc = liaison_runtime.serve(model, endpoint=f"ipc://{tmp_path}/s{len(made)}.sock", **kw)
        made.append(svc)
        c = Client(svc.endpoint)
        hello = c.request("hello")
        c.sid = hello["sid"]
        info = c.ops(op("serve_attach", [H(1)]), meta=[H(1)])["meta"][0]
        c.ops(op("serve_model", [H(2)], name="model"))
        return svc, c, info

    yield model, make
    for svc in made:
        svc.close()


def sgd_program(c: Client, names: list[str], name="sgd") -> Handle:
    """program_define of p -= lr * grad for each parameter; inputs (lr, step)."""
    lr, step = c.handle(), c.handle()
    recs = []
    for n in names:
        g, p, d = c.handle(), c.handle(), c.handle()
        recs += [op("model_grad", [g], H(2), n), op("model_param", [p], H(2), n), op("mul", [d], g, lr),
                 op("sub_", [c.handle()], p, d)]
    prog = c.handle()
    c.ops(op("program_define", [prog], name, recs, [lr, step], []))
    return prog


def mask_program(c: Client, name: str, mask: Handle) -> Handle:
    lr, step, p = c.handle(), c.handle(), c.handle()
    prog = c.handle()
    recs = [op("model_param", [p], H(2), name), op("mul_", [c.handle()], p, mask)]
    c.ops(op("program_define", [prog], "mask", recs, [lr, step], []))
    return prog


def put(svc, c: Client, t: torch.Tensor) -> Handle:
    """A tensor into the client's session (the test owns the served process)."""
    h = c.handle()
    svc.server.exec.sessions.get(c.sid).objects[h.id] = t
    return h


def train_step(model, svc, x, y):
    svc.optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    svc.optimizer.step()
    return loss.item()


def test_models_by_name_and_unknown_name(served):
    model, make = served
    svc, c, info = make()
    assert info["models"] == ["model"]
    assert info["optimizer_params"]["model"] == [n for n, _ in model.named_parameters()]
    r = c.request("batch", ops=[op("serve_model", [H(9)], name="nope")])
    assert not r["ok"] and r["error"]["code"] == "E_ARG" and "'model'" in r["error"]["message"]


def test_only_the_attached_service_installs_and_malformed_installs_name_their_field(served):
    _model, make = served
    svc, c, _info = make()
    other = Client(svc.endpoint)
    other.sid = other.request("hello")["sid"]
    try:
        r = other.request("batch", ops=[op("serve_install", [H(5)], key="x", model="model")])
        assert not r["ok"] and r["error"]["code"] == "E_ARG" and "not the service attached" in r["error"]["message"]
    finally:
        other.close()
    for field, bad in (("points", ["afterBackward"]), ("params", "w"), ("state", [1])):
        r = c.request("batch", ops=[op("serve_install", [c.handle()], key="x", model="model", **{field: bad})])
        assert not r["ok"] and r["error"]["code"] == "E_ARG" and r["error"].get("param") == field, r["error"]


def test_plugin_optimizer_replays_the_program_as_sgd_would(served):
    model, make = served
    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    ref.load_state_dict(model.state_dict())
    svc, c, info = make(optimizer=torch.optim.SGD(model.parameters(), lr=0.3))
    assert isinstance(svc.optimizer, torch.optim.Optimizer)
    names = info["optimizer_params"]["model"]
    prog = sgd_program(c, names)
    c.ops(op("serve_install", [c.handle()], key="sgd", model="model", update=prog, params=names, lr=0.1))
    sgd = torch.optim.SGD(ref.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    for _ in range(3):
        a = train_step(model, svc, x, y)
        sgd.zero_grad()
        b = torch.nn.functional.mse_loss(ref(x), y)
        b.backward()
        sgd.step()
        assert a == pytest.approx(b.item(), abs=1e-6)
    assert svc.optimizer.plugin == "sgd" and svc.optimizer.param_groups[0]["lr"] == 0.1
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_without_a_plugin_it_steps_the_scripts_optimizer_or_says_none_is_installed(served):
    model, make = served
    svc, c, _ = make()
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    with pytest.raises(RuntimeError, match="no optimizer plugin is installed"):
        train_step(model, svc, x, y)
    assert not svc.lock.locked()  # the failed step let go of the lock


def test_masks_are_held_after_every_step_and_an_install_waits_for_the_next_step(served):
    model, make = served
    svc, c, info = make(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    names = info["optimizer_params"]["model"]
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    mask = (torch.arange(12).reshape(3, 4) % 2).float()
    prog = mask_program(c, "0.weight", put(svc, c, mask))
    svc.optimizer.zero_grad()  # a step has begun: an install now is staged for the next one
    out = torch.nn.functional.mse_loss(model(x), y)
    out.backward()
    rid = c.send("batch", ops=[op("serve_install", [c.handle()], key="mask", model="model",
                                  points={"afterOptimizerStep": prog})])
    svc.optimizer.step()
    assert c.recv()["id"] == rid
    assert (model[0].weight * (1 - mask)).abs().sum() > 0  # this step ran without the mask
    for _ in range(3):
        train_step(model, svc, x, y)
        assert torch.all(model[0].weight[mask == 0] == 0)  # held after every step
    sgd = sgd_program(c, names)
    c.ops(op("serve_install", [c.handle()], key="sgd", model="model", update=sgd, params=names, lr=0.1))
    train_step(model, svc, x, y)
    assert torch.all(model[0].weight[mask == 0] == 0)
    c.ops(op("serve_uninstall", [c.handle()], key="mask"))
    train_step(model, svc, x, y)  # from this step on the masks are no longer held
    assert (model[0].weight * (1 - mask)).abs().sum() > 0
    assert list(svc._installed) == ["sgd"]


def test_a_half_installed_plugin_never_runs(served):
    model, make = served
    svc, c, info = make(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    # its programs are defined, but the install that names them never came (the service died)
    mask_program(c, "0.weight", put(svc, c, torch.zeros(3, 4)))
    train_step(model, svc, x, y)
    assert model[0].weight.abs().sum() > 0
    assert svc._installed == {}


def test_requests_land_between_steps_never_inside_one(served):
    model, make = served
    svc, c, _ = make(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    seen = []
    svc.server.exec.extra_ops["probe"] = lambda ctx, sess, a, k: seen.append(svc._in_step) or torch.zeros(())
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    svc.optimizer.zero_grad()
    rid = c.send("batch", ops=[op("probe", [c.handle()])])
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    svc.optimizer.step()
    assert c.recv()["id"] == rid
    assert seen == [False]
    # the server's request gets its turn before the next step takes the lock again
    rid = c.send("batch", ops=[op("probe", [c.handle()])])
    done = threading.Event()
    threading.Thread(target=lambda: (c.recv(), done.set()), daemon=True).start()
    for _ in range(50):
        train_step(model, svc, x, y)
        if done.is_set():
            break
    assert done.wait(60) and seen == [False, False]


@pytest.mark.parametrize("how", ["continue", "stop"])
def test_disconnect(served, how):
    model, make = served
    svc, c, info = make(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), on_disconnect=how)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    prog = mask_program(c, "0.weight", put(svc, c, torch.zeros(3, 4)))
    c.ops(op("serve_install", [c.handle()], key="mask", model="model", points={"afterOptimizerStep": prog}))
    assert c.request("close")["ok"]
    assert not svc.attached
    if how == "stop":
        assert svc.stopped
        with pytest.raises(liaison_runtime.ServiceStopped):
            train_step(model, svc, x, y)
        assert not svc.lock.locked()
    else:
        train_step(model, svc, x, y)  # the installed plugin goes on
        assert model[0].weight.abs().sum() == 0


def test_loop_points_wait_for_the_service_only_there(served):
    model, make = served
    svc, c, _ = make(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    svc.epoch_end(0)  # nothing installed asks for epochEnd: no wait
    c.ops(op("serve_install", [c.handle()], key="pruner", model="model", loops=["epochEnd"]))
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    train_step(model, svc, x, y)  # the install is active from this step
    got = []

    def service():
        r = c.request("ping", events=30_000)
        got.append(r["events"])
        with torch.no_grad():
            model[0].weight.zero_()  # what a pruning event's ops would do, before the ack
        c.ops(op("serve_ack", [c.handle()], id=r["events"][0]["id"]))

    t = threading.Thread(target=service, daemon=True)
    t.start()
    svc.epoch_end(1, {"loss": 0.5})
    t.join(60)
    assert got[0][0]["point"] == "epochEnd" and got[0][0]["epoch"] == 1 and got[0][0]["metrics"] == {"loss": 0.5}
    assert model[0].weight.abs().sum() == 0  # the script went on only after the service's hook
    assert c.request("ping", events=0)["events"] == []  # a poll whose wait is up answers empty


def test_extra_loss_sums_the_loss_programs_and_trains_through_them(served):
    model, make = served
    svc, c, _ = make(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert svc.extra_loss().item() == 0.0
    lr, step, w, sq, total, prog = (c.handle() for _ in range(6))
    recs = [op("model_param", [w], H(2), "2.weight"), op("square", [sq], w), op("sum", [total], sq)]
    c.ops(op("program_define", [prog], "l2", recs, [lr, step], [total]))
    c.ops(op("serve_install", [c.handle()], key="l2", model="model", loss=prog))
    svc.optimizer.zero_grad()  # the install is active from this step
    extra = svc.extra_loss()
    torch.testing.assert_close(extra, model[2].weight.square().sum())
    extra.backward()  # a term of the script's loss: its gradient reaches the weight
    torch.testing.assert_close(model[2].weight.grad, 2 * model[2].weight.detach())
    svc.optimizer.step()


def test_optimizer_state_dict_round_trips_into_the_programs_tensors(served):
    model, make = served
    svc, c, info = make(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    names = info["optimizer_params"]["model"]
    bufs = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    lr, step = c.handle(), c.handle()
    recs, state = [], {}
    for n in names:  # b += grad (a momentum buffer without decay), p -= lr * b
        b, g, p, d = put(svc, c, bufs[n]), c.handle(), c.handle(), c.handle()
        state[n] = {"momentum": b}
        recs += [op("model_grad", [g], H(2), n), op("add_", [c.handle()], b, g), op("model_param", [p], H(2), n),
                 op("mul", [d], b, lr), op("sub_", [c.handle()], p, d)]
    prog = c.handle()
    c.ops(op("program_define", [prog], "mom", recs, [lr, step], []))
    c.ops(op("serve_install", [c.handle()], key="mom", model="model", update=prog, params=names, state=state, lr=0.1))
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    train_step(model, svc, x, y)
    saved = copy.deepcopy(svc.optimizer.state_dict())  # as torch.save would keep it
    first = model[0].weight
    assert svc.optimizer.state[first]["momentum"] is bufs["0.weight"]  # the program's own tensor
    kept = bufs["0.weight"].clone()
    train_step(model, svc, x, y)
    svc.optimizer.load_state_dict(saved)
    assert svc.optimizer.state[first]["momentum"] is bufs["0.weight"]  # still the captured one…
    torch.testing.assert_close(bufs["0.weight"], kept)  # …holding the saved values


def test_a_served_gpt_decodes_with_its_kv_hook_under_the_lock(tmp_path):
    from liaison_runtime.models import build
    from liaison_runtime.ops.model import model_hook

    torch.manual_seed(0)
    gpt = build({"kind": "gpt", "vocab": 32, "context": 32, "dim": 16, "layers": 2, "heads": 2}, torch.device("cpu"))
    mlp = torch.nn.Linear(4, 2)
    svc = liaison_runtime.serve({"gpt": gpt, "mlp": mlp}, torch.optim.SGD(gpt.parameters(), lr=0.1),
                                endpoint=f"ipc://{tmp_path}/g.sock")
    c = Client(svc.endpoint)
    try:
        c.sid = c.request("hello")["sid"]
        c.ops(op("serve_attach", [H(1)]), op("serve_model", [H(2)], name="gpt"))
        toks = torch.randint(0, 32, (2, 24))
        full = svc.kv_eval(toks, 4, model="gpt")
        seen = []

        def newest(ins):  # keys, values, attn, pos -> scores: the newest tokens stay (a sliding window)
            seen.append(svc.lock.locked())
            return [ins[3].float()]

        model_hook(None, gpt, "kv", newest, {"budget": 6})  # what Model.setKVPolicy's op does
        win = svc.kv_eval(toks, 4, model="gpt")
        assert seen and all(seen) and not svc.lock.locked()  # the decoding held the lock, and let it go
        assert (win - full).abs().max() > 1e-3  # the hook decided what the cache kept
        c.ops(op("kv_eval", [H(4)], H(2), put(svc, c, toks), 4))  # the runtime's own op, over the wire
        torch.testing.assert_close(win, svc.server.exec.sessions.get(c.sid).objects[4])
        svc.optimizer.zero_grad()  # inside a step (this thread holds the lock): no deadlock
        assert svc.generate(toks[:, :4], 6, model="gpt", lengths=[4, 2]).shape == (2, 10)
        svc.optimizer.step()
        with pytest.raises(ValueError, match="name one"):
            svc.generate(toks[:, :4], 2)
        with pytest.raises(ValueError, match="'gpt' spec"):
            svc.kv_eval(toks, 4, model="mlp")
        assert not svc.lock.locked()
    finally:
        c.close()
        svc.close()

"""Refusals: every bad call must come back as a RuntimeFault with the right code, and a
message that names the op and the parameter at fault — raised before torch runs, so the
client reads our words rather than a kernel's. Also: seeded random ops reproduce."""

from __future__ import annotations

import pytest
import torch
from runner import CPU, Runner

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.executor import Executor
from liaison_runtime.ops import OPS
from liaison_runtime.ops.registry import P, op
from liaison_runtime.protocol import Handle
from liaison_runtime.session import Session


def fault(code: str, name: str, param: str | None, *args, **kw) -> RuntimeFault:
    with pytest.raises(RuntimeFault) as info:
        Runner()(name, *args, **kw)
    f = info.value
    assert f.code == code, f"{name}: got {f.code}: {f.message}"
    assert f.message.startswith(f"{name}:"), f.message
    if param is not None:
        assert f.extra.get("param") == param, f"{f.message} (param {f.extra.get('param')!r})"
        assert param in f.message, f.message
    return f


f32 = torch.ones(3, 4)
f64 = torch.ones(3, 4, dtype=torch.float64)
i64 = torch.ones(3, 4, dtype=torch.int64)
sq = torch.eye(3)
mask = torch.ones(3, 4, dtype=torch.bool)


# ---- binding: kinds, arity, names ----

def test_unknown_param_kind_is_refused_at_registration():
    with pytest.raises(ValueError, match="unknown param kind"):
        P("x", "tensr")


def test_an_op_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        op("add", P("input", "tensor"))(lambda ctx, input: input)


def test_unknown_op_is_refused_by_the_executor():
    ex = Executor(CPU)
    sid = ex.handle({"kind": "hello"}, [])[0]["sid"]
    with pytest.raises(RuntimeFault) as info:
        ex.handle({"kind": "batch", "sid": sid, "ops": [{"op": "no_such_op", "out": [Handle(1)]}]}, [])
    assert info.value.code == "E_UNKNOWN_OP" and "no_such_op" in info.value.message
    assert info.value.extra["index"] == 0


def test_variable_output_op_through_the_executor():
    ex = Executor(CPU)
    sid = ex.handle({"kind": "hello"}, [])[0]["sid"]
    ops = [{"op": "arange", "out": [Handle(1)], "args": [6]},
           {"op": "split", "out": [Handle(2), Handle(3), Handle(4)], "args": [Handle(1), 2]}]
    reply, _, _ = ex.handle({"kind": "batch", "sid": sid, "ops": ops, "meta": [Handle(4)]}, [])
    assert reply["meta"] == [{"dtype": "i64", "shape": [2], "device": "cpu"}]
    with pytest.raises(RuntimeFault) as info:  # 3 pieces, 2 handles
        ex.handle({"kind": "batch", "sid": sid, "ops": [{**ops[1], "out": [Handle(5), Handle(6)]}]}, [])
    assert info.value.code == "E_ARG" and "split" in info.value.message


def test_missing_argument():
    fault("E_ARG", "add", "other", f32)


def test_unexpected_keyword():
    fault("E_ARG", "add", "bogus", f32, f32, bogus=1)


def test_too_many_positionals():
    f = fault("E_ARG", "neg", None, f32, f32)
    assert "at most 1" in f.message


def test_argument_given_twice():
    fault("E_ARG", "add", "other", f32, f32, other=f32)


def test_string_where_a_tensor_goes():
    f = fault("E_ARG", "matmul", "input", "x", f32)
    assert "must be a tensor" in f.message


def test_value_outside_choices():
    fault("E_ARG", "qr", "mode", f32, "bogus")


def test_bool_is_not_an_int():
    fault("E_ARG", "unsqueeze", "dim", f32, True)


@pytest.mark.parametrize("name", sorted(n for n, d in OPS.items() if d.params))
def test_every_op_reports_its_missing_first_argument(name):
    first = OPS[name].params[0]
    with pytest.raises(RuntimeFault) as info:
        OPS[name].bind([], {}, Session("t"))
    assert info.value.code == "E_ARG"
    assert info.value.message == f"{name}: missing argument '{first.name}'"


def test_ops_without_arguments_refuse_one():
    # dist_rank and dist_world_size take nothing: a stray argument is still E_ARG
    bare = sorted(n for n, d in OPS.items() if not d.params)
    assert bare == ["dist_rank", "dist_world_size"]
    for name in bare:
        OPS[name].bind([], {}, Session("t"))
        with pytest.raises(RuntimeFault) as info:
            OPS[name].bind([1], {}, Session("t"))
        assert info.value.code == "E_ARG", name


_TENSOR_PARAMS = [(n, p.name) for n, d in sorted(OPS.items()) for p in d.params
                  if p.kind.rstrip("?") in ("tensor", "tensors")]


@pytest.mark.parametrize("name,param", _TENSOR_PARAMS)
def test_every_tensor_param_refuses_a_string_and_a_dead_handle(name, param):
    d = OPS[name]
    kinds = {p.name: p.kind.rstrip("?") for p in d.params}
    good = {n: [Handle(1)] if k == "tensors" else Handle(1)
            for n, k in kinds.items() if k in ("tensor", "tensors")}
    s = Session("t")
    s.put(1, torch.ones(2))
    for bad, code in (("nope", "E_ARG"), (Handle(99), "E_HANDLE")):
        value = [bad] if kinds[param] == "tensors" and isinstance(bad, Handle) else bad
        with pytest.raises(RuntimeFault) as info:
            d.bind([], {**_required_scalars(d), **good, param: value}, s)
        f = info.value
        assert f.code == code, f.message
        assert f.message.startswith(f"{name}: argument '{param}'"), f.message
        assert f.extra.get("param") == param


def _required_scalars(d):
    sample = {"int": 1, "float": 1.0, "bool": True, "str": "x", "ints": [0], "int|ints": 1, "shape": [1],
              "scalar": 1, "tensor|scalar": 1, "dtype": "f32", "any": "fro", "object": Handle(1)}
    out = {}
    for p in d.params:
        if p.kind in sample:
            out[p.name] = p.choices[0] if p.choices else sample[p.kind]
    return out


def test_dead_handle_keeps_its_id():
    f = fault("E_HANDLE", "relu", "input", Handle(4242))
    assert f.extra["handle"] == 4242 and "4242" in f.message


# ---- dtypes ----

DTYPE_CASES = [
    ("mean", "input", [i64]),
    ("std", "input", [i64]),
    ("logsumexp", "input", [i64]),
    ("norm", "input", [i64]),
    ("exp", "input", [i64]),
    ("topk_mask", "scores", [i64, 2]),
    ("matmul", "input", [i64, i64]),
    ("matmul", "other", [f32, f64]),
    ("einsum", "operands", ["ij,jk->ik", [f32, f64.T]]),
    ("qr", "input", [f32.half()]),
    ("inv", "input", [torch.eye(3, dtype=torch.int64)]),
    ("solve", "B", [sq, sq.double()]),
    ("dot", "input", [torch.ones(3, dtype=torch.int64), torch.ones(3)]),
    ("softmax", "input", [i64, 0]),
    ("layer_norm", "weight", [f32, [4], f64[0]]),
    ("linear", "weight", [f32, f64]),
    ("cross_entropy", "input", [i64, torch.zeros(3, dtype=torch.int64)]),
    ("cross_entropy", "target", [f32, f64]),
    ("mse_loss", "target", [f32, f64]),
    ("dropout", "input", [i64]),
    ("rand", "dtype", [[2], "i64"]),
    ("normal", "dtype", [0.0, 1.0, [2], "i32"]),
    ("rand_like", "input", [i64]),
    ("where", "condition", [f32, f32, f32]),
    ("index_select", "index", [f32, 0, torch.zeros(1)]),
    ("gather", "index", [f32, 0, f32]),
    ("scatter", "src", [f32, 0, i64[:1], f64]),
    ("masked_fill", "mask", [f32, f32, 0.0]),
    ("one_hot", "input", [torch.zeros(3)]),
    ("add_", "other", [i64, 0.5]),
    ("add_", "alpha", [i64, 1, 0.5]),
    ("div_", "input", [i64, 2]),
    ("fill_", "value", [i64, 1.5]),
    ("lerp_", "end", [f32, f64, 0.5]),
    ("addcmul_", "tensor1", [f32, i64, f32]),
    ("index_copy_", "source", [f32, 0, torch.tensor([0]), f64[:1]]),
]


@pytest.mark.parametrize("name,param,args", DTYPE_CASES, ids=[f"{c[0]}-{c[1]}" for c in DTYPE_CASES])
def test_wrong_dtype(name, param, args):
    fault("E_DTYPE", name, param, *args)


# ---- shapes ----

SHAPE_CASES = [
    ("matmul", "other", [torch.ones(2, 3), torch.ones(4, 5)]),
    ("matmul", "other", [torch.ones(2, 2, 3), torch.ones(3, 3, 1)]),
    ("matmul", "input", [torch.tensor(1.0), f32]),
    ("einsum", "operands", ["ij,jk->ik", [f32, f32]]),
    ("einsum", "operands", ["ijk->i", [f32]]),
    ("dot", "other", [torch.ones(3), torch.ones(4)]),
    ("outer", "vec2", [torch.ones(3), f32]),
    ("inv", "input", [f32]),
    ("det", "input", [torch.ones(3)]),
    ("solve", "B", [sq, torch.ones(4, 2)]),
    ("reshape", "shape", [f32, [5, 2]]),
    ("reshape", "shape", [f32, [5, -1]]),
    ("cat", "tensors", [[f32, torch.ones(3, 5)]]),
    ("cat", "tensors", [[f32, torch.ones(12)]]),
    ("stack", "tensors", [[f32, torch.ones(4, 3)]]),
    ("transpose", "dim1", [f32, 0, 2]),
    ("permute", "dims", [f32, [0]]),
    ("squeeze", "dim", [f32, [3]]),
    ("unsqueeze", "dim", [f32, 4]),
    ("expand", "shape", [f32, [3, 5]]),
    ("expand", "shape", [f32, [4]]),
    ("split", "split_size_or_sections", [f32, [1, 2], 1]),
    ("narrow", "length", [f32, 1, 2, 3]),
    ("narrow", "start", [f32, 1, 5, 0]),
    ("repeat", "repeats", [f32, [2]]),
    ("tril", "input", [torch.ones(3)]),
    ("diag", "input", [torch.ones(2, 2, 2)]),
    ("sum", "dim", [f32, [2]]),
    ("max_dim", "dim", [f32, -3]),
    ("index_select", "index", [f32, 1, torch.tensor([4])]),
    ("index_select", "index", [f32, 1, torch.tensor([-1])]),
    ("gather", "index", [f32, 1, torch.zeros(3, dtype=torch.int64)]),
    ("gather", "index", [f32, 1, torch.zeros(4, 1, dtype=torch.int64)]),
    ("scatter_add", "index", [f32, 1, torch.zeros(3, 3, dtype=torch.int64), torch.ones(3, 2)]),
    ("masked_fill", "mask", [torch.ones(4), mask, 0.0]),
    ("masked_select", "mask", [f32, torch.ones(2, dtype=torch.bool)]),
    ("take_along_dim", "indices", [f32, torch.tensor([12])]),
    ("take_along_dim", "indices", [f32, torch.zeros(2, 5, dtype=torch.int64), 1]),
    ("one_hot", "input", [torch.tensor([3]), 3]),
    ("layer_norm", "normalized_shape", [f32, [3]]),
    ("linear", "weight", [f32, torch.ones(2, 3)]),
    ("linear", "bias", [f32, torch.ones(2, 4), torch.ones(3)]),
    ("cross_entropy", "target", [torch.ones(3, 5), torch.zeros(4, dtype=torch.int64)]),
    ("cross_entropy", "target", [torch.ones(3, 5), torch.tensor([0, 5, 1])]),
    ("mse_loss", "target", [f32, torch.ones(4)]),
    ("add", "other", [f32, torch.ones(2)]),
    ("add_", "other", [torch.ones(3, 1), f32]),
    ("copy_", "src", [f32, torch.ones(5)]),
    ("masked_fill_", "mask", [torch.ones(4), mask, 0.0]),
    ("index_copy_", "source", [f32, 1, torch.tensor([0, 1]), torch.ones(3, 3)]),
    ("index_copy_", "index", [f32, 1, torch.tensor([4]), torch.ones(3, 1)]),
]


@pytest.mark.parametrize("name,param,args", SHAPE_CASES, ids=[f"{c[0]}-{c[1]}" for c in SHAPE_CASES])
def test_wrong_shape(name, param, args):
    fault("E_SHAPE", name, param, *args)


def test_matmul_message_names_both_shapes():
    f = fault("E_SHAPE", "matmul", "other", torch.ones(2, 3), torch.ones(4, 5))
    assert "[2, 3]" in f.message and "[4, 5]" in f.message


def test_reshape_message_counts_elements():
    f = fault("E_SHAPE", "reshape", "shape", f32, [5, 2])
    assert "12 elements" in f.message


# ---- values ----

VALUE_CASES = [
    ("topk", "k", [f32, 5]),
    ("topk_mask", "k", [f32, 0]),
    ("topk_mask", "k", [f32, 13]),
    ("split", "split_size_or_sections", [f32, 0]),
    ("chunk", "chunks", [f32, 0]),
    ("slice", "step", [f32, 0, None, None, 0]),
    ("randint", "high", [3, 3, [2]]),
    ("normal", "std", [0.0, -1.0, [2]]),
    ("randperm", "n", [-1]),
    ("eye", "m", [2, -1]),
    ("linspace", "steps", [0, 1, -1]),
    ("dropout", "p", [f32, 1.5]),
    ("matrix_norm", "ord", [f32, "bogus"]),
    ("matrix_norm", "ord", [f32, 3]),
    ("matrix_norm", "dim", [f32, "fro", [0]]),
    ("flatten", "start_dim", [torch.ones(2, 3, 4), 2, 1]),
    ("permute", "dims", [f32, [0, 0]]),
    ("sum", "dim", [f32, [1, -1]]),
    ("roll", "shifts", [f32, [1, 2]]),
    ("reshape", "shape", [f32, [-1, -1]]),
    ("std", "correction", [f32, None, -1]),
    ("one_hot", "num_classes", [torch.tensor([0]), -2]),
    ("cross_entropy", "label_smoothing", [torch.ones(2, 3), torch.tensor([0, 1]), None, -100, "mean", 2.0]),
    ("einsum", "operands", ["ij,jk->ik", [f32]]),
    ("einsum", "equation", ["i1->i", [torch.ones(3, 2)]]),
    ("clamp_", "min", [f32]),
    ("add_", "input", [torch.ones(3).expand(2, 3), 1]),
]


@pytest.mark.parametrize("name,param,args", VALUE_CASES, ids=[f"{c[0]}-{c[1]}" for c in VALUE_CASES])
def test_bad_value(name, param, args):
    fault("E_ARG", name, param, *args)


def test_refused_inplace_op_leaves_input_untouched():
    t = torch.ones(3, 1)
    with pytest.raises(RuntimeFault):
        Runner()("add_", t, torch.ones(3, 4))
    assert torch.equal(t, torch.ones(3, 1))


# ---- seeded randomness ----

RANDOM_CASES = [
    ("rand", [[64]]), ("randn", [[64]]), ("randint", [0, 1000, [64]]), ("normal", [0.0, 1.0, [64]]),
    ("randperm", [64]), ("bernoulli", [torch.full((64,), 0.5)]), ("rand_like", [torch.ones(64)]),
    ("randn_like", [torch.ones(64)]), ("dropout", [torch.ones(64)]),
]


@pytest.mark.parametrize("name,args", RANDOM_CASES, ids=[c[0] for c in RANDOM_CASES])
def test_same_seed_same_values(name, args):
    a = Runner()(name, *args, seed=11)
    b = Runner()(name, *args, seed=11)
    c = Runner()(name, *args, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name,args", RANDOM_CASES, ids=[c[0] for c in RANDOM_CASES])
def test_session_stream_replays_after_manual_seed(name, args):
    run = Runner()
    run("manual_seed", 5)
    first, second = run(name, *args), run(name, *args)
    assert not torch.equal(first, second), "the session stream must advance"
    run(name, *args, seed=99)  # a seeded call draws from its own generator, not the stream
    run("manual_seed", 5)
    assert torch.equal(run(name, *args), first)
    assert torch.equal(run(name, *args), second)
    other = Runner()
    other("manual_seed", 5)
    assert torch.equal(other(name, *args), first), "same seed, same stream in another session"


def test_a_seed_outside_what_a_generator_takes_is_refused_naming_it():
    # msgpack carries integers up to 2^64 - 1 and down to -2^63; torch's generators take that range
    for seed in (1 << 64, -(1 << 63) - 1):
        fault("E_ARG", "randn", "seed", [2], seed=seed)
        fault("E_ARG", "randperm", "seed", 5, seed=seed)
        fault("E_ARG", "manual_seed", "seed", seed)
    run = Runner()
    assert torch.equal(run("randperm", 5, seed=-1), run("randperm", 5, seed=(1 << 64) - 1))  # torch wraps negatives

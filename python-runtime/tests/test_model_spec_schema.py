"""The model spec's JSON Schema (models/spec.schema.json, generated from sdk/model-spec.ts)
and its validator (models/spec.py): the file uses only what the validator implements, a
refused value names the field path, what it must be and what it got, and the builders take
their defaults from the schema, not from tables of their own."""

from __future__ import annotations

import pytest
import torch

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.models.build import KINDS, build
from liaison_runtime.models.mlp import ACTIVATIONS
from liaison_runtime.models.moe import init_param
from liaison_runtime.models.spec import ANNOTATIONS, SCHEMA, SUPPORTED, check, validate

CPU = torch.device("cpu")
GPT = {"kind": "gpt", "vocab": 16, "context": 8, "dim": 8, "heads": 2}


def _variant(kind: str) -> dict:
    return next(o for o in SCHEMA["oneOf"] if o["properties"]["kind"]["const"] == kind)


def _keywords(s, found: set) -> set:
    """Every keyword the schema uses (property names are names, not keywords)."""
    if isinstance(s, dict):
        for k, v in s.items():
            found.add(k)
            if k == "properties":
                for sub in v.values():
                    _keywords(sub, found)
            elif k in ("items", "additionalProperties", "propertyNames"):
                _keywords(v, found)
            elif k == "oneOf":
                for sub in v:
                    _keywords(sub, found)
    return found


def test_the_schema_uses_only_keywords_the_validator_implements():
    # a keyword validate() does not know would be ignored silently: a constraint lost
    unknown = _keywords(SCHEMA, set()) - SUPPORTED - ANNOTATIONS - {"discriminator"}
    assert not unknown, f"spec.schema.json uses {sorted(unknown)}; implement them in models/spec.py"


def test_an_unknown_keyword_is_found():
    assert _keywords({"properties": {"x": {"type": "integer", "multipleOf": 2}}}, set()) >= {"multipleOf"}


def test_the_schema_names_what_the_runtime_implements():
    assert KINDS == ("mlp", "cnn", "gpt", "moe", "additive", "factory")
    assert _variant("mlp")["properties"]["activation"]["enum"] == list(ACTIVATIONS)
    inits = _variant("gpt")["properties"]["moe"]["properties"]["params"]["additionalProperties"]["properties"]["init"]
    values = {i: init_param([3], i, None) for i in inits["enum"]}
    assert values["zeros"].eq(0).all() and values["ones"].eq(1).all()
    assert set(values) == {"normal", "zeros", "ones", "uniform"}


def test_defaults_are_filled_from_the_schema():
    f = check({"kind": "mlp", "sizes": [4, 2]})
    assert f == {"kind": "mlp", "sizes": [4, 2], "activation": "relu", "bias": True, "dropout": 0, "seed": None}
    g = check({**GPT, "moe": {"experts": 2, "hidden": 4}})
    assert g["layers"] == 2 and g["mlp_ratio"] == 4 and g["moe"] == {"experts": 2, "hidden": 4, "every": 1,
                                                                     "params": {}, "batched": True}
    a, b = check({"kind": "factory", "ref": "m:f"}), check({"kind": "factory", "ref": "m:f"})
    a["kwargs"]["x"] = 1
    assert b["kwargs"] == {} and _variant("factory")["properties"]["kwargs"]["default"] == {}  # never shared


def test_the_builders_use_the_schema_defaults():
    cnn = _variant("cnn")["properties"]
    m = build({"kind": "cnn", "image": [8, 8], "channels": [4], "classes": 3}, CPU)
    assert m.fc.out_features == cnn["hidden"]["default"]
    assert m.convs[0].in_channels == cnn["in_channels"]["default"]
    assert m.convs[0].kernel_size == (cnn["kernel"]["default"],) * 2
    gpt = build({"kind": "gpt", "vocab": 16, "context": 8}, CPU)
    assert gpt.describe()["hooks"]["kv"] == _variant("gpt")["properties"]["layers"]["default"]


@pytest.mark.parametrize("spec,field,must,got", [
    ({"kind": "mlp", "sizes": [4, 0]}, "sizes", "a list of at least 2 items, each an integer >= 1", "list [4, 0]"),
    ({"kind": "mlp", "sizes": [4, 2], "dropout": 1.0}, "dropout", "a number in [0, 1)", "float 1.0"),
    ({"kind": "mlp", "sizes": [4, 2], "bias": 1}, "bias", "true or false", "int 1"),
    ({"kind": "cnn", "image": [8, 8, 8], "channels": [4], "classes": 2}, "image",
     "a list of 2 items, each an integer >= 1", "list [8, 8, 8]"),
    ({**GPT, "moe": {"experts": 2, "hidden": True}}, "moe.hidden", "an integer >= 1", "bool True"),
    ({**GPT, "moe": [2]}, "moe", "a map or null", "list [2]"),
    ({**GPT, "moe": {"experts": 2, "hidden": 8, "params": {"g": {"shape": [2], "std": -1}}}},
     "moe.params.g.std", "a number >= 0 or null", "int -1"),
    ({**GPT, "moe": {"experts": 2, "hidden": 8, "params": {"g": {"shape": [2, -1]}}}},
     "moe.params.g.shape", "a list of items, each an integer >= 0", "list [2, -1]"),
    ({"kind": "factory", "ref": 3}, "ref", "a string", "int 3"),
    # a seed torch's generator would refuse with "Overflow when unpacking long long"
    ({"kind": "mlp", "sizes": [4, 2], "seed": 2**64}, "seed",
     "an integer in [-9007199254740992, 9007199254740992) or null", f"int {2**64}"),
])
def test_a_refused_value_names_the_path_the_expected_and_the_got(spec, field, must, got):
    with pytest.raises(RuntimeFault) as e:
        check(spec)
    assert e.value.code == "E_ARG" and e.value.extra["field"] == field
    assert str(e.value) == f"model_build: spec field '{field}' must be {must}, got {got}"


def test_unknown_and_missing_fields_are_named_with_their_path():
    with pytest.raises(RuntimeFault, match=r"'moe\.params\.g\.size' is not known; allowed: shape, init, std, bound"):
        check({**GPT, "moe": {"experts": 2, "hidden": 8, "params": {"g": {"size": [2]}}}})
    with pytest.raises(RuntimeFault, match=r"'moe\.params\.g\.shape' is required"):
        check({**GPT, "moe": {"experts": 2, "hidden": 8, "params": {"g": {}}}})


def test_validate_walks_any_schema_of_the_subset():
    s = {"type": "object", "additionalProperties": False, "required": ["a"],
         "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer", "minimum": 2}}}}}
    with pytest.raises(RuntimeFault, match=r"spec field 'a\.b' must be an integer >= 2, got int 1"):
        validate(s, {"a": {"b": 1}})
    assert validate(s, {"a": {"b": 2}}) == {"a": {"b": 2}}

"""The model spec's JSON Schema (spec.schema.json, generated from the SDK's TypeBox schemas
in sdk/model-spec.ts by scripts/model-spec-schema.ts) and the check of a spec against it.

The check is a small validator for the subset of JSON Schema the generated file uses
(SUPPORTED below; a test fails if the file ever uses a keyword outside it), not the
`jsonschema` package: that would add four packages, one of them compiled (rpds-py), to
every install and shared venv for about sixty lines, and its messages ("0 is less than the
minimum of 1" at a JSON pointer) would have to be rewritten into this runtime's E_ARG form
anyway: `model_build: spec field 'moe.hidden' must be an integer >= 1, got int 0`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import RuntimeFault
from .base import spec_fault

SCHEMA_PATH = Path(__file__).with_name("spec.schema.json")
SCHEMA: dict = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

# the keywords validate() acts on, and those it may ignore because they only annotate
SUPPORTED = {"type", "const", "enum", "minimum", "exclusiveMaximum", "items", "minItems", "maxItems",
             "properties", "required", "additionalProperties", "propertyNames", "pattern", "oneOf",
             "discriminator"}
ANNOTATIONS = {"$schema", "$id", "title", "description", "default"}

_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, (list, tuple)),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_NOUNS = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string",
          "array": "a list", "object": "a map", "null": "null"}


def _show(v) -> str:
    return f"{type(v).__name__} {v!r}"[:80]


def expected(s: dict) -> str:
    """What a value of schema `s` must be, in words: 'an integer >= 1', 'one of relu, gelu'."""
    if "const" in s:
        return repr(s["const"])
    if "enum" in s:
        return "one of " + ", ".join(str(e) for e in s["enum"])
    types = s.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    parts = []
    for t in types:
        noun = _NOUNS[t]
        if t in ("integer", "number"):
            lo, hi = s.get("minimum"), s.get("exclusiveMaximum")
            noun += f" >= {lo}" if hi is None and lo is not None else f" in [{lo}, {hi})" if hi is not None else ""
        elif t == "array":
            lo, hi = s.get("minItems"), s.get("maxItems")
            count = f"{lo} " if lo is not None and lo == hi else f"at least {lo} " if lo else ""
            noun = f"a list of {count}items" + (f", each {expected(s['items'])}" if "items" in s else "")
        parts.append(noun)
    return " or ".join(parts) or "valid"


def _fits(s: dict, v) -> bool:
    """True when a scalar or a list of scalars `v` matches `s` (objects are walked by validate)."""
    types = s.get("type")
    if types is not None and not any(_TYPES[t](v) for t in ([types] if isinstance(types, str) else types)):
        return False
    if "const" in s and v != s["const"]:
        return False
    if "enum" in s and v not in s["enum"]:
        return False
    if _TYPES["number"](v):
        if "minimum" in s and v < s["minimum"]:
            return False
        if "exclusiveMaximum" in s and v >= s["exclusiveMaximum"]:
            return False
    if _TYPES["array"](v):
        if len(v) < s.get("minItems", 0) or len(v) > s.get("maxItems", len(v)):
            return False
        if "items" in s and not all(_fits(s["items"], x) for x in v):
            return False
    return True


def validate(s: dict, v, path: str = ""):
    """`v` checked against schema `s`, defaults filled in (a copy); the first mismatch is
    E_ARG naming the field path, what it must be and what it got. A list is judged whole,
    so its error names the list field and shows the list."""
    if "discriminator" in s:
        key = s["discriminator"]["propertyName"]
        options = {o["properties"][key]["const"]: o for o in s["oneOf"]}
        kind = v.get(key) if isinstance(v, dict) else None
        if not isinstance(v, dict):
            raise RuntimeFault("E_ARG", f"model_build: 'spec' must be a map with a '{key}' ({', '.join(options)}), "
                               f"got {type(v).__name__}", param="spec", field="spec")
        if kind not in options:
            raise spec_fault(path + key, f"must be one of {', '.join(options)}, got {_show(kind)}")
        return validate(options[kind], v, path)
    if isinstance(v, dict) and (s.get("type") == "object" or "object" in (s.get("type") or [])):
        return _object(s, v, path)
    if not _fits(s, v):
        raise spec_fault(path[:-1] or "spec", f"must be {expected(s)}, got {_show(v)}")
    return v


def _object(s: dict, v: dict, path: str) -> dict:
    props = s.get("properties", {})
    extra = s.get("additionalProperties", True)
    names = s.get("propertyNames")
    for k in v:
        if names is not None and not (isinstance(k, str) and re.fullmatch(names["pattern"], k)):
            raise spec_fault(f"{path}{k}", f"must be named by {names.get('description', names['pattern'])}")
        if k not in props and extra is False:
            raise spec_fault(f"{path}{k}", f"is not known; allowed: {', '.join(props)}")
    for k in s.get("required", []):
        if k not in v:
            raise spec_fault(f"{path}{k}", "is required")
    out = {}
    for k, sub in props.items():
        if k in v:
            out[k] = validate(sub, v[k], f"{path}{k}.")
        elif "default" in sub:
            out[k] = json.loads(json.dumps(sub["default"]))  # a fresh copy: a default is never shared
    for k in v:
        if k not in props:
            out[k] = validate(extra, v[k], f"{path}{k}.") if isinstance(extra, dict) else v[k]
    return out


def check(spec) -> dict:
    """A `model_build` spec checked against SCHEMA, with every default filled in."""
    return validate(SCHEMA, spec)

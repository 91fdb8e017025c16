"""check_finite: the training step's guard against a NaN or infinite loss (sdk/nonfinite.ts)."""

from __future__ import annotations

import math

import pytest
import torch
from runner import Runner, fault


@pytest.fixture
def r():
    return Runner()


def test_a_finite_value_passes_and_leaves_the_flag_alone(r):
    halt = torch.zeros((), dtype=torch.int64)
    assert r("check_finite", torch.tensor(0.5), torch.tensor(3.0), halt) == ()
    assert int(halt) == 0


@pytest.mark.parametrize(("value", "kind"), [(math.nan, "NaN"), (math.inf, "infinite"), (-math.inf, "infinite")])
def test_a_non_finite_value_names_the_step_and_stops_every_later_one(r, value, kind):
    halt = torch.zeros((), dtype=torch.int64)
    f = fault("E_NONFINITE", r, "check_finite", torch.tensor(value), torch.tensor(7.0), halt, what="training loss")
    assert f.message == f"check_finite: the training loss is {kind} at step 7"
    assert int(halt) == 7
    # a step sent behind it fails too, even with a finite loss, naming the first one
    f = fault("E_NONFINITE", r, "check_finite", torch.tensor(1.0), torch.tensor(8.0), halt, what="training loss")
    assert "step 8 was not run: the training loss of step 7 was not finite" in f.message
    assert int(halt) == 7


def test_the_flag_must_be_0d(r):
    fault("E_SHAPE", r, "check_finite", torch.tensor(1.0), torch.tensor(1.0), torch.zeros(2, dtype=torch.int64))

"""TensorBoard ops: written when the runtime's Python has tensorboard, refused clearly when not."""

import importlib.util

import pytest
import torch
from runner import Runner, fault

from liaison_runtime import policy

HAVE_TB = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture()
def r(tmp_path):
    saved = policy.ALLOW_FACTORIES, policy.ALLOW_FILES, policy.FILE_ROOT
    policy.set_policy(files=True, root=tmp_path)  # the logdirs below are in the test's folder
    yield Runner()
    policy.set_policy(factories=saved[0], files=saved[1], root=saved[2])


@pytest.mark.skipif(HAVE_TB, reason="tensorboard is installed here: the refusal cannot happen")
def test_without_tensorboard_the_writer_is_refused_saying_so(r, tmp_path):
    assert "TensorBoard is not installed" in fault("E_ARG", r, "tb_writer", str(tmp_path)).message


@pytest.mark.skipif(not HAVE_TB, reason="tensorboard is not installed in this Python (it is optional)")
def test_scalars_reach_an_event_file_and_close_ends_the_writer(r, tmp_path):
    w = r.obj(r("tb_writer", str(tmp_path)))
    r("tb_scalar", w, "train/loss", torch.tensor(0.5), 1)
    r("tb_flush", w)
    r("tb_close", w)
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_file_access_is_refused_where_the_runtime_does_not_allow_it(tmp_path):
    saved = policy.ALLOW_FILES
    policy.set_policy(files=False)
    try:
        assert "--allow-files" in fault("E_ARG", Runner(), "tb_writer", str(tmp_path)).message
    finally:
        policy.set_policy(files=saved)


def test_a_writer_op_refuses_what_is_not_a_writer(r):
    if not HAVE_TB:
        pytest.skip("tensorboard is not installed in this Python (the writer check imports it)")
    fault("E_ARG", r, "tb_close", r.obj(torch.zeros(1)))

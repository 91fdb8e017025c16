"""File operations stay inside the runtime's file root and never overwrite unasked (issue 9, item 3):
`..`, absolute paths elsewhere and symlinks pointing out are refused naming the path, the root
and the flag; an existing file is replaced only with overwrite=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from runner import Runner, fault

from liaison_runtime import policy

MLP = {"kind": "mlp", "sizes": [4, 3], "seed": 0}
PYTHON_RUNTIME = Path(__file__).resolve().parents[1]


@pytest.fixture()
def root(tmp_path):
    """A root folder inside the test's folder, with a sibling `outside` the ops must not reach."""
    inside, outside = tmp_path / "root", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    saved = policy.ALLOW_FACTORIES, policy.ALLOW_FILES, policy.FILE_ROOT
    policy.set_policy(files=True, root=inside)
    yield inside
    policy.set_policy(factories=saved[0], files=saved[1], root=saved[2])


@pytest.fixture()
def r():
    return Runner()


def _refused_outside(f, path, root: Path) -> None:
    assert f.code == "E_ARG" and f.extra["param"] in ("path", "logdir")
    assert repr(str(path)) in f.message or repr(path) in f.message, f.message
    assert str(root.resolve()) in f.message and "--file-root" in f.message, f.message


@pytest.mark.parametrize("where", ["../outside/x.safetensors", "ABS", "../outside/hf"])
def test_a_save_outside_the_root_is_refused_and_writes_nothing(r, root, where):
    path = str(root.parent / "outside" / "x.safetensors") if where == "ABS" else where
    f = fault("E_ARG", r, "model_save_file", r("model_build", MLP), path)
    _refused_outside(f, path, root)
    assert list((root.parent / "outside").iterdir()) == []


def test_a_load_outside_the_root_is_refused(r, root):
    m = r("model_build", MLP)
    policy.set_policy(root=root.parent / "outside")
    r("model_save_file", m, "x.safetensors")  # relative: against the root
    assert (root.parent / "outside" / "x.safetensors").is_file()
    policy.set_policy(root=root)
    f = fault("E_ARG", r, "model_load_file", m, "../outside/x.safetensors")
    _refused_outside(f, "../outside/x.safetensors", root)
    _refused_outside(fault("E_ARG", r, "model_load_file", m, "/etc/passwd"), "/etc/passwd", root)


def test_symlinks_pointing_out_are_refused_for_reading_and_writing(r, root):
    m = r("model_build", MLP)
    outside = root.parent / "outside"
    policy.set_policy(root=outside)
    r("model_save_file", m, "x.safetensors")
    policy.set_policy(root=root)
    (root / "file-link.safetensors").symlink_to(outside / "x.safetensors")
    (root / "dir-link").symlink_to(outside, target_is_directory=True)
    _refused_outside(fault("E_ARG", r, "model_load_file", m, "file-link.safetensors"), "file-link.safetensors", root)
    _refused_outside(fault("E_ARG", r, "model_save_file", m, "dir-link/new.safetensors"), "dir-link/new.safetensors",
                     root)
    assert not (outside / "new.safetensors").exists()
    # a Hugging Face folder inside the root whose file is a link out
    (root / "hf").mkdir()
    (root / "hf" / "model.safetensors").symlink_to(outside / "x.safetensors")
    assert "outside the runtime's file root" in fault("E_ARG", r, "model_load_file", m, "hf").message
    # a sharded index inside the root naming a shard that is a link out
    (root / "sharded").mkdir()
    index = '{"weight_map": {"layers.0.weight": "s.safetensors"}}'
    (root / "sharded" / "model.safetensors.index.json").write_text(index)
    (root / "sharded" / "s.safetensors").symlink_to(outside / "x.safetensors")
    assert "outside the runtime's file root" in fault("E_ARG", r, "model_load_file", m, "sharded").message


def test_links_and_dots_that_stay_inside_are_fine(r, root):
    m = r("model_build", MLP)
    (root / "sub").mkdir()
    r("model_save_file", m, "sub/../a.safetensors")
    (root / "alias").symlink_to(root / "sub", target_is_directory=True)
    r("model_save_file", m, str(root / "alias" / "b.safetensors"))
    assert (root / "a.safetensors").is_file() and (root / "sub" / "b.safetensors").is_file()
    r("model_load_file", m, "alias/b.safetensors")


def test_an_existing_file_is_overwritten_only_when_asked(r, root):
    a, b = r("model_build", MLP), r("model_build", {**MLP, "seed": 1})
    r("model_save_file", a, "ckpt.safetensors")
    before = (root / "ckpt.safetensors").read_bytes()
    f = fault("E_ARG", r, "model_save_file", b, "ckpt.safetensors")
    assert f.extra["param"] == "overwrite" and "overwrite=true" in f.message
    assert str(root / "ckpt.safetensors") in f.message
    assert (root / "ckpt.safetensors").read_bytes() == before
    r("model_save_file", b, "ckpt.safetensors", overwrite=True)
    assert (root / "ckpt.safetensors").read_bytes() != before
    # the Hugging Face folder form: the model.safetensors inside it is the file guarded
    r("model_save_file", a, "hf")
    fault("E_ARG", r, "model_save_file", b, "hf")
    r("model_save_file", b, "hf", overwrite=True)
    # no temporary files are left beside what was written, refused or not
    assert sorted(p.name for p in root.iterdir()) == ["ckpt.safetensors", "hf"]
    assert [p.name for p in (root / "hf").iterdir()] == ["model.safetensors"]


def test_a_file_where_a_folder_is_named_is_refused_as_the_callers_mistake(r, root):
    (root / "plain").write_text("not a folder")
    assert "is a file, not a folder" in fault("E_ARG", r, "model_save_file", r("model_build", MLP), "plain").message


def test_tensorboard_logdirs_are_confined_too(r, root):
    _refused_outside(fault("E_ARG", r, "tb_writer", "../outside/runs"), "../outside/runs", root)
    assert list((root.parent / "outside").iterdir()) == []


def test_the_flag_and_its_environment_variable_set_the_root(tmp_path):
    # a root that is not a folder stops the runtime before it listens, naming the flag
    code = ("import sys; from liaison_runtime.__main__ import main; "
            "sys.exit(main(['--endpoint', 'tcp://127.0.0.1:0', '--file-root', sys.argv[1]]))")
    env = {**os.environ, "PYTHONPATH": str(PYTHON_RUNTIME)}
    env.pop("LIAISON_FILE_ROOT", None)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nowhere")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "--file-root" in out.stderr and "nowhere" in out.stderr, out.stderr
    # the environment variable is the default of the flag; an import reads it for the hatch
    probe = "from liaison_runtime import policy; print(policy.FILE_ROOT)"
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "LIAISON_FILE_ROOT": str(tmp_path)},
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert out.stdout.strip() == str(tmp_path.resolve()), out.stderr
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.stdout.strip() == str(tmp_path.resolve()), out.stderr  # default: the working directory

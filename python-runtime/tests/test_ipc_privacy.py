"""Who may connect to an ipc:// runtime (issue 9 item 1).

An abstract socket (ipc://@name) has no file, so no permissions: any local user can
connect, whatever folder the runtime started from. A socket in a folder others can enter
is as open. Such an endpoint must be signed (a key) or refused, and never gets factories or
file access implicitly.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from wire import Served, error_code

from liaison_runtime import policy
from liaison_runtime.server import Server, check_endpoint

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux's")


@pytest.fixture()
def saved_policy():
    saved = policy.ALLOW_FACTORIES, policy.ALLOW_FILES
    yield
    policy.set_policy(factories=saved[0], files=saved[1])


def private_dir(tmp_path: Path, name: str = "private") -> Path:
    d = tmp_path / name
    d.mkdir(mode=0o700)
    return d


def test_an_abstract_socket_is_never_private_even_from_a_private_folder(tmp_path, monkeypatch, saved_policy):
    monkeypatch.chdir(private_dir(tmp_path))  # "@name" once resolved against this folder
    assert not policy.private_ipc("ipc://@liaison-test")
    assert "abstract" in policy.ipc_exposure("ipc://@liaison-test")
    policy.set_policy(factories=False, files=False)
    policy.for_endpoint("ipc://@liaison-test")
    assert not policy.ALLOW_FACTORIES and not policy.ALLOW_FILES
    policy.for_endpoint(f"ipc://{tmp_path}/private/rt.sock")  # the launcher's kind stays private
    assert policy.ALLOW_FACTORIES and policy.ALLOW_FILES


def test_a_folder_of_another_user_or_open_to_others_is_not_private(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o711)  # others cannot list it but can enter it, and so connect
    assert "open to other users" in policy.ipc_exposure(f"ipc://{shared}/rt.sock")
    assert "cannot be checked" in policy.ipc_exposure(f"ipc://{tmp_path}/missing/rt.sock")
    if os.getuid() != 0:
        assert "another user" in policy.ipc_exposure("ipc:///rt.sock")  # / is root's


def test_an_exposed_ipc_endpoint_needs_a_key(tmp_path, monkeypatch):
    monkeypatch.chdir(private_dir(tmp_path))
    with pytest.raises(SystemExit, match="abstract socket.*LIAISON_KEY"):
        check_endpoint("ipc://@liaison-test", None, False)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with pytest.raises(SystemExit, match="open to other users.*0700"):
        check_endpoint(f"ipc://{shared}/rt.sock", None, False)
    check_endpoint("ipc://@liaison-test", b"k", False)
    check_endpoint(f"ipc://{shared}/rt.sock", b"k", False)
    check_endpoint(f"ipc://{tmp_path}/private/rt.sock", None, False)
    check_endpoint("inproc://liaison-test", None, False)  # in-process: nobody else


@linux_only
def test_a_keyed_abstract_runtime_refuses_unsigned_messages(tmp_path, monkeypatch):
    name = f"ipc://@liaison-test-{os.getpid()}"
    with pytest.raises(SystemExit, match="abstract"):
        Server(name, device=torch.device("cpu"))
    served = Served(name, key=b"the key")
    try:
        sock = served.client()
        assert error_code(served.call(sock, {"kind": "hello"}, key=None)) == "E_AUTH"
        assert error_code(served.call(sock, {"kind": "hello"}, key=b"another key")) == "E_AUTH"
        assert served.call(sock, {"kind": "ping"})["ok"]
    finally:
        served.close()


def test_closing_an_abstract_runtime_removes_no_file(tmp_path, monkeypatch):
    from liaison_runtime.server import remove_ipc_files

    monkeypatch.chdir(tmp_path)
    bystander = tmp_path / "@liaison-test"  # what "@liaison-test" names relative to the cwd
    bystander.write_text("not ours")
    remove_ipc_files("ipc://@liaison-test")
    assert bystander.read_text() == "not ours"


@linux_only
def test_the_runtime_process_refuses_an_unsigned_abstract_socket(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("LIAISON_KEY", None)
    proc = subprocess.run([sys.executable, "-m", "liaison_runtime", "--endpoint", f"ipc://@liaison-t{os.getpid()}"],
                          cwd=private_dir(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "abstract socket" in proc.stderr and "LIAISON_KEY" in proc.stderr
    assert "LIAISON_READY" not in proc.stdout


@linux_only
def test_the_embedded_hatch_refuses_an_endpoint_others_could_reach(saved_policy):
    from liaison_runtime import embedded

    policy.set_policy(factories=False, files=False)
    with pytest.raises(RuntimeError, match="abstract socket"):
        embedded.start(f"ipc://@liaison-hatch-{os.getpid()}", "cpu")
    assert not embedded.running() and not policy.ALLOW_FACTORIES and not policy.ALLOW_FILES

"""What a runtime may do beyond tensor math: import code by name, read and write files.

Both are off by default. A runtime that only its own user can reach (an ipc:// socket in
a private folder, or the embedded hatch inside the user's own interpreter) turns them on;
a tcp runtime, which other machines may reach, has them only when started with
`--allow-factories` / `--allow-files`.

- ALLOW_FACTORIES: `model_build({"kind": "factory", "ref": "pkg.mod:fn"})` may import
  `pkg.mod` and call `fn` — arbitrary code, so only for a trusted client.
- ALLOW_FILES: `model_load_file` / `model_save_file` may touch the runtime's file system.
"""

from __future__ import annotations

import os

ALLOW_FACTORIES = False
ALLOW_FILES = False


def set_policy(*, factories: bool | None = None, files: bool | None = None) -> None:
    """Set either flag; None leaves it as it is."""
    global ALLOW_FACTORIES, ALLOW_FILES
    if factories is not None:
        ALLOW_FACTORIES = bool(factories)
    if files is not None:
        ALLOW_FILES = bool(files)


def private_ipc(endpoint: str) -> bool:
    """An ipc:// socket in a folder only this user can enter (the launcher's mkdtemp folder):
    nobody else can connect to it. A socket in a shared folder (/tmp) is not private."""
    if not endpoint.startswith("ipc://"):
        return False
    folder = os.path.dirname(os.path.abspath(endpoint[len("ipc://"):]))
    try:
        st = os.stat(folder)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o077


def for_endpoint(endpoint: str, factories: bool = False, files: bool = False) -> None:
    """The policy of a runtime serving `endpoint`: an ipc:// runtime in a private folder is
    reachable only by the user who spawned it, so it gets both; otherwise only what the
    flags grant."""
    private = private_ipc(endpoint)
    set_policy(factories=factories or private, files=files or private)

"""What a runtime may do beyond tensor math: import code by name, read and write files.

Both are off by default. A runtime that only its own user can reach (an ipc:// socket in
a private folder, or the embedded hatch inside the user's own interpreter) turns them on;
a tcp runtime, which other machines may reach, has them only when started with
`--allow-factories` / `--allow-files`.

- ALLOW_FACTORIES: `model_build({"kind": "factory", "ref": "pkg.mod:fn"})` may import
  `pkg.mod` and call `fn` — arbitrary code, so only for a trusted client.
- ALLOW_FILES: `model_load_file` / `model_save_file` / `tb_writer` may touch the runtime's
  file system, but only inside FILE_ROOT (`--file-root DIR` / LIAISON_FILE_ROOT; default the
  working directory the runtime started in). `confine` is the one gate every path passes.
"""

from __future__ import annotations

import os

from .errors import RuntimeFault

ALLOW_FACTORIES = False
ALLOW_FILES = False


def _root(folder: str) -> str:
    real = os.path.realpath(os.path.expanduser(folder))
    if not os.path.isdir(real):
        raise ValueError(f"file root {folder!r} is not a folder (resolved to {real!r})")
    return real


# A runtime imported into someone else's interpreter (the hatch) gets the environment's root
# too. Not checked here (an import must not fail on it): confine refuses a root that is no folder.
FILE_ROOT = os.path.realpath(os.path.expanduser(os.environ.get("LIAISON_FILE_ROOT") or os.getcwd()))


def set_policy(*, factories: bool | None = None, files: bool | None = None,
               root: str | os.PathLike | None = None) -> None:
    """Set any of the three; None leaves it as it is. A root that is not a folder is a ValueError."""
    global ALLOW_FACTORIES, ALLOW_FILES, FILE_ROOT
    if factories is not None:
        ALLOW_FACTORIES = bool(factories)
    if files is not None:
        ALLOW_FILES = bool(files)
    if root is not None:
        FILE_ROOT = _root(os.fspath(root))


def confine(op: str, param: str, path: str) -> str:
    """`path` (relative ones against the root) as a real path inside FILE_ROOT, or E_ARG.

    realpath resolves `..` and every symlink that exists, so a link inside the root that
    points out is refused as `../` is; the parts that do not exist yet cannot be links."""
    root = FILE_ROOT
    if not os.path.isdir(root):
        raise RuntimeFault("E_ARG", f"{op}: the runtime's file root {root!r} is not a folder; start it with "
                           "--file-root DIR (LIAISON_FILE_ROOT) naming one", param=param, root=root)
    if "\0" in path:
        raise RuntimeFault("E_ARG", f"{op}: argument '{param}' holds a NUL character: {path!r}", param=param)
    real = os.path.realpath(os.path.join(root, os.path.expanduser(path)))
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise RuntimeFault("E_ARG", f"{op}: path {path!r} resolves to {real!r}, outside the runtime's file root "
                           f"{root!r}; use a path inside it, or start the runtime with --file-root DIR "
                           "(LIAISON_FILE_ROOT; the SDK's fileRoot option) naming a folder that holds it",
                           param=param, path=path, root=root)
    return real


def ipc_exposure(endpoint: str) -> str | None:
    """Why other local users could connect to this ipc:// endpoint, or None when only this
    user can (a socket in a folder only this user can enter: the launcher's mkdtemp folder).

    An abstract socket (`ipc://@name`, Linux) has no file and so no permissions at all:
    any local user can connect to it, whatever folder the runtime was started from."""
    path = endpoint[len("ipc://"):]
    if path.startswith("@"):
        return f"{endpoint} is an abstract socket, which has no file permissions"
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(folder)
    except OSError as e:
        return f"its folder {folder} cannot be checked ({e.strerror})"
    if st.st_uid != os.getuid():
        return f"its folder {folder} belongs to another user"
    if st.st_mode & 0o077:
        return f"its folder {folder} is open to other users (mode {st.st_mode & 0o777:o})"
    return None


def private_ipc(endpoint: str) -> bool:
    """An ipc:// socket nobody but this user can connect to (see ipc_exposure). A socket in a
    shared folder (/tmp) or an abstract one is not private."""
    return endpoint.startswith("ipc://") and ipc_exposure(endpoint) is None


def for_endpoint(endpoint: str, factories: bool = False, files: bool = False) -> None:
    """The policy of a runtime serving `endpoint`: an ipc:// runtime in a private folder is
    reachable only by the user who spawned it, so it gets both; otherwise only what the
    flags grant."""
    private = private_ipc(endpoint)
    set_policy(factories=factories or private, files=files or private)

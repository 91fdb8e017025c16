"""The one table of error codes (protocol v1, docs/protocol.md §6).

The TypeScript side has the same table in bridge/errors.ts; both are checked against
test/protocol/vectors.json, so a code added here without the other side fails a test.
"""

from __future__ import annotations

import re
import traceback

# code -> one-line meaning. Order is the spec's order.
ERROR_CODES: dict[str, str] = {
    "E_PROTOCOL": "malformed message: bad frames, not msgpack, missing or mistyped header fields",
    "E_VERSION": "the peer speaks another major version of the protocol",
    "E_AUTH": "missing or wrong HMAC signature, or a timestamp outside the allowed window",
    "E_REPLAY": "a signed message that was already received once",
    "E_SESSION": "unknown or closed session id (a runtime restart ends every session)",
    "E_UNKNOWN_OP": "no op of that name in the runtime's op table",
    "E_ARG": "an argument is missing, unexpected, or of the wrong kind or value",
    "E_DTYPE": "a tensor argument has a dtype the op does not accept",
    "E_SHAPE": "tensor shapes do not fit the op",
    "E_HANDLE": "a handle that does not exist in this session (never created, or freed)",
    "E_OP_FAILED": "the op raised while running; the message and traceback say why",
    "E_OOM": "the device ran out of memory",
    "E_INTERNAL": "a bug in the runtime; the traceback says where",
    "E_TIMEOUT": "client side: no reply within the request's timeout",
    "E_DEAD": "client side: the runtime process exited or the connection was lost",
    "E_CLOSED": "client side: the client was closed while the request was pending",
    "E_SPAWN": "client side: the local runtime could not be started",
    "E_TRACE": "a program's traced code did what a program cannot: read a value, await, or leak a placeholder",
    "E_LIMIT": "a limit of this runtime refused the request: message size, session count",
    "E_NONFINITE": "a value that must be finite (a training loss, an input) was NaN or infinite",
    "E_GROUP": "a rank of a group died, could not be reached, disagreed about the group, or a collective failed "
               "or timed out",
}


class RuntimeFault(Exception):
    """An error that travels back to the client as `{code, message, ...}`."""

    def __init__(self, code: str, message: str, **extra):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def to_wire(self) -> dict:
        out = {"code": self.code, "message": self.message}
        out.update(self.extra)
        return out


_SHAPE_HINTS = re.compile(r"shape|size mismatch|must match the size|dimension|cannot be multiplied|"
                          r"out of range|Expected .*dim", re.I)
_DTYPE_HINTS = re.compile(r"dtype|scalar type|not implemented for|expected .*Float|expected .*Long", re.I)


# A CPU allocation that fails is a RuntimeError from c10's allocator, not a MemoryError.
_OOM_HINTS = re.compile(r"can't allocate memory|out of memory|not enough memory", re.I)


def classify(e: Exception, op: str) -> RuntimeFault:
    """A torch/Python exception raised inside op `op` as the typed error the client gets."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or _OOM_HINTS.search(msg):
        code = "E_OOM"
    elif isinstance(e, OverflowError):
        # a number the op had to convert did not fit its type (an int beyond int64, 1e300 into
        # f32): the caller's value, named in the message
        code = "E_ARG"
        msg = f"a number is out of range for this op ({msg})"
    elif _SHAPE_HINTS.search(msg):
        code = "E_SHAPE"
    elif _DTYPE_HINTS.search(msg):
        code = "E_DTYPE"
    else:
        code = "E_OP_FAILED"
    return RuntimeFault(code, f"{op}: {msg}", traceback=traceback.format_exc())

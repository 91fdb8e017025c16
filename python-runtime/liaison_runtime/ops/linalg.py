"""Linear algebra: products, decompositions, solves and norms.

Shapes are checked here before torch sees them, so a mismatch comes back as E_SHAPE
naming both shapes instead of a kernel's message. Decompositions run on LAPACK/cuSOLVER,
which take f32/f64 only; products take every floating dtype.
"""

from __future__ import annotations

import math

import torch

from ..errors import RuntimeFault
from .checks import need_broadcast, need_dims, need_dtype, need_float, need_rank, need_same_dtype
from .reduce import vector_norm as _vector_norm
from .registry import P, op

_LAPACK = frozenset({torch.float32, torch.float64})


def _shape_fault(name: str, msg: str, param: str) -> RuntimeFault:
    return RuntimeFault("E_SHAPE", f"{name}: {msg}", param=param)


def _floats(name: str, a, pa: str, b=None, pb: str = "other") -> None:
    need_float(name, pa, a)
    if b is not None:
        need_float(name, pb, b)
        need_same_dtype(name, pb, b, a, pa)


def _matrix(name: str, param: str, t, square: bool = False) -> None:
    """t is (..., m, n) in f32/f64; with square, m == n."""
    need_dtype(name, param, t, _LAPACK)
    need_rank(name, param, t, 2, max(t.dim(), 2))
    if square and t.shape[-1] != t.shape[-2]:
        raise _shape_fault(name, f"'{param}' must be square in its last two dims, got shape "
                           f"{list(t.shape)}", param)


def _batch(t, k: int):
    return t.shape[:-k] if t.dim() > k else ()


@op("matmul", P("input", "tensor"), P("other", "tensor"))
def matmul(ctx, input, other):
    """matmul(input, other): (..., m, k) @ (..., k, n) -> (..., m, n); 1-D operands act as vectors."""
    _floats("matmul", input, "input", other)
    a, b = list(input.shape), list(other.shape)
    if not a or not b:
        p = "input" if not a else "other"
        raise _shape_fault("matmul", f"'{p}' is 0-d; both operands need at least 1 dimension, got {a} "
                           f"and {b}", p)
    k_other = b[-2] if len(b) >= 2 else b[0]
    if a[-1] != k_other:
        raise _shape_fault("matmul", f"cannot multiply shapes {a} and {b}: 'input' has {a[-1]} columns but "
                           f"'other' has {k_other} rows", "other")
    if len(a) > 2 or len(b) > 2:
        need_broadcast("matmul", _batch(input, 2), _batch(other, 2), param="other")
    return torch.matmul(input, other)


def _einsum_check(equation: str, operands) -> None:
    lhs = equation.replace(" ", "").split("->")[0]
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise RuntimeFault("E_ARG", f"einsum: equation '{equation}' names {len(terms)} operands but "
                           f"{len(operands)} were given", param="operands")
    sizes: dict[str, int] = {}
    for i, (term, t) in enumerate(zip(terms, operands, strict=True)):
        head, dots, tail = term.partition("...")
        if len(head) + len(tail) > t.dim() or (not dots and len(term) != t.dim()):
            raise _shape_fault("einsum", f"subscripts '{term}' do not fit 'operands'[{i}] of shape "
                               f"{list(t.shape)}", "operands")
        pairs = list(zip(head, t.shape[:len(head)], strict=True))
        pairs += zip(tail, t.shape[t.dim() - len(tail):], strict=True)
        for c, n in pairs:
            if not c.isalpha():
                raise RuntimeFault("E_ARG", f"einsum: '{c}' in equation '{equation}' is not a "
                                   "subscript letter", param="equation")
            prev = sizes.get(c)
            if prev is not None and prev != n and 1 not in (prev, n):
                raise _shape_fault("einsum", f"subscript '{c}' has size {prev} in one operand and {n} "
                                   f"in 'operands'[{i}] (shape {list(t.shape)})", "operands")
            sizes[c] = n if prev in (None, 1) else prev


@op("einsum", P("equation", "str"), P("operands", "tensors"))
def einsum(ctx, equation, operands):
    """einsum(equation, operands): Einstein summation, e.g. 'bij,bjk->bik'."""
    need_float("einsum", "operands", operands[0])
    for t in operands[1:]:
        need_same_dtype("einsum", "operands", t, operands[0], "operands")
    _einsum_check(equation, operands)
    return torch.einsum(equation, *operands)


@op("outer", P("input", "tensor"), P("vec2", "tensor"))
def outer(ctx, input, vec2):
    """outer(input, vec2): (n,) x (m,) -> (n, m)."""
    _floats("outer", input, "input", vec2, "vec2")
    need_rank("outer", "input", input, 1)
    need_rank("outer", "vec2", vec2, 1)
    return torch.outer(input, vec2)


@op("dot", P("input", "tensor"), P("other", "tensor"))
def dot(ctx, input, other):
    """dot(input, other): (n,) . (n,) -> 0-d."""
    _floats("dot", input, "input", other)
    need_rank("dot", "input", input, 1)
    need_rank("dot", "other", other, 1)
    if input.shape != other.shape:
        raise _shape_fault("dot", f"'input' {list(input.shape)} and 'other' {list(other.shape)} "
                           "differ in length", "other")
    return torch.dot(input, other)


@op("qr", P("input", "tensor"), P("mode", "str", "reduced", choices=("reduced", "complete")), outputs=2)
def qr(ctx, input, mode):
    """qr(input, mode='reduced') -> (Q, R) with input = Q @ R."""
    _matrix("qr", "input", input)
    q, r = torch.linalg.qr(input, mode=mode)
    return q, r


@op("eigh", P("input", "tensor"), P("UPLO", "str", "L", choices=("L", "U")), outputs=2)
def eigh(ctx, input, UPLO):  # noqa: N803 — torch's own parameter name
    """eigh(input, UPLO='L') -> (eigenvalues ascending, eigenvectors) of a symmetric matrix."""
    _matrix("eigh", "input", input, square=True)
    w, v = torch.linalg.eigh(input, UPLO=UPLO)
    return w, v


@op("svd", P("input", "tensor"), P("full_matrices", "bool", False), outputs=3)
def svd(ctx, input, full_matrices):
    """svd(input, full_matrices=False) -> (U, S, Vh) with input = U @ diag(S) @ Vh."""
    _matrix("svd", "input", input)
    u, s, vh = torch.linalg.svd(input, full_matrices=full_matrices)
    return u, s, vh


@op("svdvals", P("input", "tensor"))
def svdvals(ctx, input):
    """svdvals(input): singular values, descending."""
    _matrix("svdvals", "input", input)
    return torch.linalg.svdvals(input)


@op("solve", P("A", "tensor"), P("B", "tensor"))
def solve(ctx, A, B):  # noqa: N803 — the usual names for A X = B
    """solve(A, B): X with A @ X = B; A (..., n, n), B (..., n, k) or (..., n)."""
    _matrix("solve", "A", A, square=True)
    need_dtype("solve", "B", B, _LAPACK)
    need_same_dtype("solve", "B", B, A, "A")
    n = A.shape[-1]
    # torch's rule: B is a (batch of) vector(s) when 1-D or when it is A's shape minus the last dim.
    vector = B.dim() == 1 or (B.dim() == A.dim() - 1 and B.shape == A.shape[:-1])
    if not vector:
        need_rank("solve", "B", B, 2, max(B.dim(), 2))
    rows = B.shape[-1] if vector else B.shape[-2]
    if rows != n:
        raise _shape_fault("solve", f"'A' {list(A.shape)} needs 'B' with {n} rows, got shape "
                           f"{list(B.shape)}", "B")
    need_broadcast("solve", _batch(A, 2), _batch(B, 1 if vector else 2), param="B")
    return torch.linalg.solve(A, B)


@op("inv", P("input", "tensor"))
def inv(ctx, input):
    """inv(input): the inverse of a square (batch of) matrix."""
    _matrix("inv", "input", input, square=True)
    return torch.linalg.inv(input)


@op("cholesky", P("input", "tensor"), P("upper", "bool", False))
def cholesky(ctx, input, upper):
    """cholesky(input, upper=False): L with input = L @ L^H (positive-definite input)."""
    _matrix("cholesky", "input", input, square=True)
    return torch.linalg.cholesky(input, upper=upper)


@op("det", P("input", "tensor"))
def det(ctx, input):
    """det(input): determinant of a square (batch of) matrix."""
    _matrix("det", "input", input, square=True)
    return torch.linalg.det(input)


@op("vector_norm", P("input", "tensor"), P("ord", "float", 2.0), P("dim", "ints?", None),
    P("keepdim", "bool", False))
def vector_norm(ctx, input, ord, dim, keepdim):
    """vector_norm(input, ord=2, dim=None, keepdim=False): the same op as norm."""
    return _vector_norm("vector_norm", input, ord, dim, keepdim)


_MATRIX_ORDS = (1.0, -1.0, 2.0, -2.0, math.inf, -math.inf)


@op("matrix_norm", P("input", "tensor"), P("ord", "any", "fro"), P("dim", "ints", (-2, -1)),
    P("keepdim", "bool", False))
def matrix_norm(ctx, input, ord, dim, keepdim):
    """matrix_norm(input, ord='fro', dim=[-2, -1], keepdim=False): ord 'fro', 'nuc', ±1, ±2 or ±inf."""
    if not (ord in ("fro", "nuc") or (isinstance(ord, (int, float)) and not isinstance(ord, bool)
                                      and ord in _MATRIX_ORDS)):
        raise RuntimeFault("E_ARG", f"matrix_norm: 'ord' must be 'fro', 'nuc', 1, -1, 2, -2, inf or -inf; "
                           f"got {ord!r}", param="ord")
    _matrix("matrix_norm", "input", input)
    if len(dim) != 2:
        raise RuntimeFault("E_ARG", f"matrix_norm: 'dim' must name 2 dimensions, got {list(dim)}",
                           param="dim")
    need_dims("matrix_norm", input, dim)
    return torch.linalg.matrix_norm(input, ord=ord, dim=tuple(dim), keepdim=keepdim)

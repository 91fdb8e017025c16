"""scikit-learn's own PCA of the digits, the reference examples/pca-digits.ts compares with.

    python examples/sklearn_pca.py [--components 10]

Loads the digits through the runtime's loader (the arrays the runtime's `dataset` op serves:
pixel counts scaled to [0, 1], exact in float32), fits `sklearn.decomposition.PCA` on them
in float64 with the default solver, and prints one JSON object: components_ (k, d),
explained_variance_ratio_, explained_variance_, mean_, noise_variance_, the solver used and
the scikit-learn version.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import sklearn
from liaison_runtime.ops.data import _load
from sklearn.decomposition import PCA


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--components", type=int, default=10)
    a = ap.parse_args()
    x, _ = _load("digits")
    pca = PCA(n_components=a.components).fit(x.astype(np.float64))
    print(json.dumps({
        "sklearn": sklearn.__version__,
        "solver": pca._fit_svd_solver,
        "n_samples": int(x.shape[0]),
        "components": pca.components_.tolist(),
        "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
        "explained_variance": pca.explained_variance_.tolist(),
        "mean": pca.mean_.tolist(),
        "noise_variance": float(pca.noise_variance_),
    }))


if __name__ == "__main__":
    main()

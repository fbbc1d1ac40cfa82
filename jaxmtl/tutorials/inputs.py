"""Deterministic numpy inputs shared by both sides of every example (numpy only).

PyTorch tutorials draw their tensors with torch.randn; the examples draw
them here from a seeded numpy generator instead, so the JAX and the PyTorch
function of an example always see the same numbers. Everything is float64 unless an example
is about a lower precision.
"""

from __future__ import annotations

import numpy as np


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def linear_inputs(seed: int = 1) -> dict[str, np.ndarray]:
    """linear_loss: x, w, b, target, each of shape (1,)."""
    r = rng(seed)
    return {k: r.standard_normal(1) for k in ("x", "w", "b", "target")}


def one_layer_inputs(seed: int = 2) -> dict[str, np.ndarray]:
    """The autograd tutorial's one-layer network: x = ones(5), y = zeros(3), w ~ randn(5, 3), b ~ randn(3)."""
    r = rng(seed)
    return {"x": np.ones(5), "y": np.zeros(3), "w": r.standard_normal((5, 3)), "b": r.standard_normal(3)}


def mlp_inputs(seed: int = 4) -> dict[str, np.ndarray]:
    """mlp_intermediates: x (5, 3), y (5,), w1 (3, 4), b1 (4,), w2 (4, 1), b2 (1,)."""
    r = rng(seed)
    shapes = {"x": (5, 3), "y": (5,), "w1": (3, 4), "b1": (4,), "w2": (4, 1), "b2": (1,)}
    return {k: r.standard_normal(s) for k, s in shapes.items()}


def rand_inputs(shape: tuple[int, ...], n: int, seed: int = 5) -> list[np.ndarray]:
    """n arrays of U[0, 1) values (torch.rand)."""
    r = rng(seed)
    return [r.random(shape) for _ in range(n)]


def mlp_stack_inputs(seed: int = 6, width: int = 8, depth: int = 4) -> dict[str, np.ndarray]:
    """checkpointing and grad_clipping: a small tanh MLP, x (4, width), weights (depth, width, width)."""
    r = rng(seed)
    return {"x": r.standard_normal((4, width)), "ws": r.standard_normal((depth, width, width)) / np.sqrt(width)}


def mixed_precision_inputs() -> dict[str, np.ndarray]:
    """mixed_precision: x = [1, 2, 3, 4] * 1e-3 and float32 master weights w = 1e-3, so the gradients are ~1e-8."""
    return {"x": np.array([1.0, 2.0, 3.0, 4.0], np.float32) * np.float32(1e-3), "w": np.full(4, 1e-3, np.float32)}


# mlp_printed_values: an MLP run whose values were printed to 4 decimals in the original
# Q&A (torch.randn draws we cannot reproduce), to check the gradient formulas against them.
PRINTED_MLP_Y = np.array([0.1177, -0.4787, 1.1570, -0.7038, -0.3809])
PRINTED_MLP_Y2 = np.array([[1.0282], [2.7791], [2.5685], [-1.9691], [2.8020]])
PRINTED_MLP_Y2_GRAD = np.array([[1.8210], [6.5158], [2.8230], [-2.5306], [6.3659]])
PRINTED_MLP_Y1_GRAD = np.array([[0.1996, 3.5949, -2.6491, 0.7318],
                             [0.7140, 12.8628, -9.4787, 2.6183],
                             [0.3094, 5.5730, -4.1067, 1.1344],
                             [-0.2773, -4.9956, 3.6813, -1.0169],
                             [0.6976, 12.5669, -9.2606, 2.5581]])
PRINTED_MLP_B1_GRAD = np.array([1.6432, 29.6020, -21.8138, 6.0257])
PRINTED_MLP_LOSS = 25.1672


def resnet18_inputs(seed: int = 7, num_classes: int = 1000) -> dict[str, np.ndarray]:
    """resnet18_step: data = rand(1, 3, 64, 64) (NCHW, torch layout), labels = rand(1, num_classes)."""
    r = rng(seed)
    return {"data_nchw": r.random((1, 3, 64, 64)), "labels": r.random((1, num_classes))}

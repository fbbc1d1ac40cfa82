"""The autodiff study: PyTorch autograd examples, each beside its functional JAX twin.

`EXAMPLES` is the registry: every example is a function of the same name in
`jaxmtl.tutorials.<topic>` (JAX) and `torch_ref.tutorials.<topic>` (PyTorch),
returning a dict of arrays with the same keys on both sides. Importing this
package imports neither torch nor the topic modules; `load` does that lazily.
`jaxmtl tutorials` lists the examples, `jaxmtl tutorials NAME` shows one.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Callable

TOPICS: dict[str, str] = {  # module under jaxmtl.tutorials and torch_ref.tutorials -> title, in reading order
    "chain_rule": "The chain rule",
    "one_layer": "A one-layer network",
    "autograd_internals": "Autograd internals",
    "numerical": "Numerical differentiation",
    "blitz": "Q = 3a³ − b², vector-Jacobian products, the DAG, an MLP",
    "resnet18": "A resnet18 training step",
    "multitask": "The multi-task model",
    "higher_order": "Higher-order derivatives and the jit cache",
}


@dataclasses.dataclass(frozen=True)
class Section:
    """A section of a public PyTorch tutorial; `link` is the page URL with the section's anchor."""

    tutorial: str
    title: str
    url: str

    @property
    def link(self) -> str:
        return f"{self.url}#{re.sub('[^a-z0-9]+', '-', self.title.lower()).strip('-')}"

    def __str__(self) -> str:
        return f'PyTorch tutorial "{self.tutorial}", section "{self.title}"'


def _autograd_tutorial(title: str) -> Section:
    return Section("Automatic Differentiation with torch.autograd", title,
                   "https://pytorch.org/tutorials/beginner/basics/autogradqs_tutorial.html")


def _blitz_tutorial(title: str) -> Section:
    return Section("A Gentle Introduction to torch.autograd", title,
                   "https://pytorch.org/tutorials/beginner/blitz/autograd_tutorial.html")


@dataclasses.dataclass(frozen=True)
class Example:
    name: str
    topic: str               # a key of TOPICS
    shows: str               # one sentence: what the example shows
    torch_idiom: str         # the PyTorch way, one line
    jax_idiom: str           # the JAX way, one line
    source: Section | None = None     # the public tutorial section it comes from, if any
    tolerance: float = 1e-12          # bound on rel_err between the two frameworks' float results
    weights_from_torch: bool = False  # the JAX side takes weights converted from the torch model
    writes_files: bool = False        # the JAX side takes out_dir and writes plots there


_E = Example
_ALL = [
    _E("linear_loss", "chain_rule",
       "The chain rule through z = w*x + b and loss = (z - target)^2 gives dloss/dw = 2(z - target)x.",
       "w.requires_grad_(); loss.backward(); read w.grad", "jax.value_and_grad(loss, argnums=(0, 1))(w, b) returns them"),
    _E("mul_grad", "chain_rule", "For y = W*x at W = 3, x = 2, each factor's gradient is the other factor: 2 and 3.",
       "y.backward(); W.grad, x.grad", "jax.grad(f, argnums=(0, 1))(W, x)"),
    _E("scalar_chain", "chain_rule",
       "The chain rule on scalars: loss = (a*b + 1)^2 at a = 2, b = 3 has gradients 42 and 28.",
       "loss.backward() fills a.grad, b.grad", "jax.grad(loss, argnums=(0, 1)) returns both gradients"),
    _E("two_paths", "chain_rule",
       "A gradient is a sum over paths: for L = theta^2 + 2 theta, path 1 gives 2 theta and path 2 gives 2.",
       "autograd.grad per branch (retain_graph=True), then backward", "one jax.vjp per branch, pullbacks summed"),
    _E("four_op_paths", "chain_rule",
       "The sum over two paths of L = ln(theta^3 sin theta), 3/theta + cot theta, equals the autodiff gradient.",
       "autograd.grad(loss, (e, c, d)), grad_outputs per path", "jax.vjp per path, jax.grad of the composition"),
    _E("one_layer_bce", "one_layer", "The gradients of a one-layer network's BCE-with-logits loss with respect to w and b.",
       "F.binary_cross_entropy_with_logits; loss.backward()", "optax.sigmoid_binary_cross_entropy(...).mean(); jax.grad",
       _autograd_tutorial("Computing Gradients")),
    _E("grad_fn_jaxpr", "one_layer", "The recorded graph: torch's grad_fn chain next to the jaxpr of the loss and its gradient.",
       "z.grad_fn, loss.grad_fn.next_functions", "jax.make_jaxpr(loss), jax.make_jaxpr(jax.grad(loss))",
       _autograd_tutorial("Tensors, Functions and Computational graph")),
    _E("no_grad_detach", "one_layer", "A value taken out of the graph (no_grad, detach) acts as a constant in the gradient.",
       "with torch.no_grad(); z.detach()", "lax.stop_gradient(z); or just don't differentiate",
       _autograd_tutorial("Disabling Gradient Tracking")),
    _E("retain_graph", "one_layer",
       "Two backward calls on a shared graph add up to the gradient of the sum, and need retain_graph=True.",
       "loss1.backward(retain_graph=True); loss2.backward()", "out, pullback = jax.vjp(f, ...); pullback called twice",
       _autograd_tutorial("Computing Gradients")),
    _E("jacobian_product", "one_layer",
       "backward(v) computes v^T J; called twice it accumulates, and zeroing .grad starts over.",
       "out.backward(v, retain_graph=True); inp.grad.zero_()", "jax.vjp(f, inp)[1](v); sums written out",
       _autograd_tutorial("Optional Reading: Tensor Gradients and Jacobian Products")),
    _E("control_flow", "autograd_internals",
       "Python control flow on values (if x.sum() > 0) differentiates the branch taken; under jit it needs lax.cond.",
       "Python if on tensor values, graph rebuilt each call", "Python if under jax.grad; lax.cond under jit"),
    _E("custom_function", "autograd_internals",
       "A custom backward rule: an autograd.Function with forward/backward is a jax.custom_vjp with fwd/bwd.",
       "class MyAdd(torch.autograd.Function): forward/backward", "@jax.custom_vjp with defvjp(fwd, bwd)"),
    _E("nonscalar_backward", "autograd_internals",
       "backward on a non-scalar needs a gradient vector v: y = 2x with v = [0.1, 0.2] gives [0.2, 0.4].",
       "y.backward(gradient=v)", "jax.vjp(f, x)[1](v)"),
    _E("retain_grad", "autograd_internals",
       "The gradient at an intermediate value: y.retain_grad() in torch, splitting the function at y in JAX.",
       "y.retain_grad(); y.grad", "split f at the intermediate: jax.vjp(head)...; jax.grad(tail)(y)"),
    _E("relu_at_zero", "autograd_internals", "ReLU's gradient at [-1, 0, 2] is [0, 0, 1]: relu'(0) = 0 in both frameworks.",
       "torch.relu(x).backward(ones)", "jax.vjp(jax.nn.relu, x)[1](ones)"),
    _E("checkpointing", "autograd_internals",
       "Gradient checkpointing recomputes activations in the backward and gives the same gradients.",
       "torch.utils.checkpoint.checkpoint(layer, x)", "jax.checkpoint(layer) (remat)", tolerance=1e-13),
    _E("grad_clipping", "autograd_internals",
       "Clipping by global norm 1.0; torch divides by norm + 1e-6, optax by norm, hence a 1e-9 difference.",
       "nn.utils.clip_grad_norm_(params, 1.0)", "optax.clip_by_global_norm(1.0)", tolerance=1e-8),
    _E("mixed_precision", "autograd_internals",
       "Gradients near 1e-8 survive bfloat16 but flush to zero in float16 unless the loss is scaled.",
       "torch.autocast('cpu', dtype); torch.amp.GradScaler('cpu')", "explicit casts; scale loss, unscale grads, skip on inf",
       tolerance=1e-6),
    _E("fd_error_vs_h", "numerical",
       "The central-difference error is O(h^2) + O(eps/h), smallest near h = eps^(1/3), while autodiff is exact.",
       "(f(x+h) - f(x-h)) / 2h in torch float32/float64", "the same in jnp; exact derivative by jax.grad", tolerance=1e-4),
    _E("exp_at_20", "numerical", "Finite differences of e^x at x = 20 lose digits that autodiff keeps.",
       "torch.autograd.grad(torch.exp(x), x)", "jax.grad(jnp.exp)(x)", tolerance=1e-4),
    _E("sqrt_cancellation", "numerical",
       "sqrt(x^2 + 1) - x cancels at large x, and so does its autodiff gradient; rewriting the function fixes both.",
       "autograd of each form", "jax.grad of each form"),
    _E("fd_cost", "numerical", "A finite-difference gradient costs 2n evaluations of f; reverse mode costs one backward pass.",
       "n perturbed forwards vs loss.backward()", "n perturbed forwards vs jax.grad", tolerance=1e-4),
    _E("numerical_stability", "numerical", "The four measurements above together, with their plots (--out DIR).",
       "finite differences vs autograd in torch", "finite differences vs jax.grad; matplotlib plots",
       tolerance=1e-4, writes_files=True),
    _E("q_backward", "blitz", "Q = 3a^3 - b^2 backpropagated with gradient = ones gives a.grad = 9a^2 and b.grad = -2b.",
       "Q.backward(gradient=ones)", "jax.vjp(Q, a, b)[1](ones)", _blitz_tutorial("Differentiation in Autograd")),
    _E("vjp_jacobian", "blitz", "J^T v from the full Jacobian equals the vector-Jacobian product that backward computes.",
       "torch.autograd.functional.jacobian; Q.backward(v)", "jax.jacrev; jax.vjp",
       _blitz_tutorial("Optional Reading - Vector Calculus using autograd")),
    _E("requires_grad_propagation", "blitz", "An output requires gradients exactly when an input it depends on does.",
       "z.requires_grad=True; a.requires_grad", "differentiate w.r.t. z: only outputs that depend on z get tangents",
       _blitz_tutorial("Exclusion from the DAG")),
    _E("x1_x2_x3", "blitz",
       "backward's gradient argument: sum(y2).backward() and y2.backward(ones) give the same gradients for y2 = x1*x2 + x3.",
       "z.backward() / y2.backward(ones)", "jax.grad(sum) / jax.vjp(..)[1](ones)"),
    _E("ones_mean", "blitz", "out = mean(3 (x + 2)^2) at x = ones(2, 2) is 27 with gradient 4.5, and requires_grad_ flips a flag.",
       "a.requires_grad_(True); out.backward(); grad_fn names", "jax.value_and_grad(f, has_aux=True) returns out and y, z"),
    _E("mlp_intermediates", "blitz",
       "The gradients of a two-layer MLP at its intermediates y2 and y1 match the hand formulas, layer by layer.",
       "autograd.grad(l, y2, retain_graph=True)", "jax.grad of the tail at the intermediate", tolerance=1e-13),
    _E("mlp_printed_values", "blitz",
       "The same hand formulas, evaluated at values printed to 4 decimals, reproduce the printed l, y2_grad and b1.grad.",
       "2 * (y2 - y); y1_grad.sum(0)", "jax.grad / jax.vjp at the printed values"),
    _E("resnet18_step", "resnet18", "One SGD step (lr 1e-2, momentum 0.9) of resnet18 gives the same parameters in both frameworks.",
       "loss.backward(); optim.SGD(...).step()", "jax.value_and_grad + optax.sgd(1e-2, momentum=0.9)",
       _blitz_tutorial("Usage in PyTorch"), tolerance=1e-10, weights_from_torch=True),
    _E("resnet18_finetune", "resnet18", "Freezing resnet18 and training a new Linear(512, 10) head changes only the head.",
       "param.requires_grad = False; model.fc = nn.Linear(512, 10)",
       "lax.stop_gradient on frozen params + optax.multi_transform(set_to_zero)",
       _blitz_tutorial("Exclusion from the DAG"), tolerance=1e-10, weights_from_torch=True),
    _E("timestep_contributions", "multitask",
       "The shared CNN's gradient is the sum of one contribution per timestep, carried back by BPTT from the last state.",
       "feats.retain_grad(); autograd.grad(feats, cnn, grad_outputs=mask_t * g)",
       "jax.vjp(encode_frames)[1](mask_t * g) per t", tolerance=1e-10, weights_from_torch=True),
    _E("concat_split", "multitask",
       "At concat(features, dynamic data) the gradient splits into the part for the CNN and the part for the data.",
       "fused.retain_grad(); feats.grad, dyn.grad", "jax.grad w.r.t. (feats, dyn) and w.r.t. fused",
       tolerance=1e-10, weights_from_torch=True),
    _E("weighted_loss_sum", "multitask", "The gradient of the weighted total loss is the weighted sum of the three losses' gradients.",
       "autograd.grad per loss with retain_graph=True", "one jax.vjp, one pullback per loss",
       tolerance=1e-10, weights_from_torch=True),
    _E("stepwise_vs_joint", "multitask",
       "Updating after one loss and then back-propagating the others is not the joint step on their sum.",
       "optimizer.step() between backward calls", "two jax.grad calls at different params",
       tolerance=1e-10, weights_from_torch=True),
    _E("higher_order", "higher_order", "Derivatives of derivatives: x^3 at x = 2 has first, second and third derivatives 12, 12, 6.",
       "autograd.grad(..., create_graph=True)", "jax.grad(jax.grad(f))"),
    _E("hessian", "higher_order", "The Hessian of x0^2 x1 + x0 sin(x2) equals the matrix worked out by hand.",
       "torch.autograd.functional.hessian", "jax.hessian", tolerance=1e-14),
    _E("retracing", "higher_order",
       "torch records a new graph on every call; jax.jit traces once per input shape and reuses the compiled program.",
       "new graph every forward", "jax.jit cache: retrace on new shapes or static args",
       _autograd_tutorial("More on Computational Graphs")),
]
EXAMPLES: dict[str, Example] = {e.name: e for e in _ALL}


def unknown_name_message(name: str) -> str:
    return f"unknown tutorial example {name!r}; known examples: {', '.join(EXAMPLES)}"


def get(name: str) -> Example:
    """The registry entry, or ValueError listing every known name."""
    if name not in EXAMPLES:
        raise ValueError(unknown_name_message(name))
    return EXAMPLES[name]


def load(name: str, side: str = "jax") -> Callable[..., dict]:
    """The example function: side "jax" (jaxmtl.tutorials) or "torch" (torch_ref.tutorials, imports torch)."""
    ex = get(name)
    package = {"jax": "jaxmtl.tutorials", "torch": "torch_ref.tutorials"}[side]
    return getattr(importlib.import_module(f"{package}.{ex.topic}"), ex.name)

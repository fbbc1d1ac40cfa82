"""The seed tutorials' examples as functional JAX, each beside its PyTorch original.

`EXAMPLES` is the registry: every example is a function of the same name in
`jaxmtl.tutorials.<topic>` (JAX) and `torch_ref.tutorials.<topic>` (PyTorch),
returning a dict of arrays with the same keys on both sides. Importing this
package imports neither torch nor the topic modules; `load` does that lazily.
`jaxmtl tutorials` lists the examples, `jaxmtl tutorials NAME` runs one.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

TOPICS = ("chain_rule", "one_layer", "autograd_internals", "numerical", "blitz",
          "resnet18", "multitask", "higher_order")


@dataclasses.dataclass(frozen=True)
class Example:
    name: str
    topic: str               # module name under jaxmtl.tutorials and torch_ref.tutorials
    seed: str                # seed file and section
    description: str
    torch_idiom: str
    jax_idiom: str
    weights_from_torch: bool = False  # the JAX side takes weights converted from the torch model
    writes_files: bool = False        # the JAX side takes out_dir and writes plots there


_E = Example
_ALL = [
    _E("linear_loss", "chain_rule", "001 §4-5", "y = w*x + b, loss = (z - target)^2: dloss/dw, dloss/db",
       "w.requires_grad_(); loss.backward(); w.grad", "jax.value_and_grad(loss, argnums=(0, 1))(w, b)"),
    _E("mul_grad", "chain_rule", "003 Q1 §二.3", "W = 3, x = 2, y = W*x -> W.grad = 2, x.grad = 3",
       "y.backward(); W.grad, x.grad", "jax.grad(f, argnums=(0, 1))(W, x)"),
    _E("scalar_chain", "chain_rule", "003 Q3 §二", "a = 2, b = 3, d = a*b + 1, loss = d^2 -> 42, 28",
       "loss.backward(); a.grad, b.grad", "jax.grad(loss, argnums=(0, 1))"),
    _E("two_paths", "chain_rule", "003 Q2 §二", "L = theta^2 + 2 theta: dL/dtheta = 2 theta + 2 as path 1 + path 2",
       "autograd.grad per branch (retain_graph=True), then backward", "one jax.vjp per branch, pullbacks summed"),
    _E("four_op_paths", "chain_rule", "003 Q2 §四", "C = theta^3, D = sin, E = C*D, L = ln E: by paths and by autodiff",
       "autograd.grad(loss, (e, c, d)), grad_outputs per path", "jax.vjp per path, jax.grad of the composition"),
    _E("one_layer_bce", "one_layer", "002 Computing Gradients", "one-layer BCE-with-logits network: w.grad, b.grad",
       "F.binary_cross_entropy_with_logits; loss.backward()", "optax.sigmoid_binary_cross_entropy(...).mean(); jax.grad"),
    _E("grad_fn_jaxpr", "one_layer", "002 Tensors, Functions and Computational graph",
       "the recorded graph: grad_fn chain vs the jaxpr", "z.grad_fn, loss.grad_fn.next_functions",
       "jax.make_jaxpr(loss), jax.make_jaxpr(jax.grad(loss))"),
    _E("no_grad_detach", "one_layer", "002 Disabling Gradient Tracking", "no_grad / detach: a stopped factor is a constant",
       "with torch.no_grad(); z.detach()", "lax.stop_gradient(z); or just don't differentiate"),
    _E("retain_graph", "one_layer", "002 retain_graph notes", "two losses on one graph: two backward calls == grad of the sum",
       "loss1.backward(retain_graph=True); loss2.backward()", "out, pullback = jax.vjp(f, ...); pullback called twice"),
    _E("jacobian_product", "one_layer", "002 Tensor Gradients and Jacobian Products",
       "inp = eye(4,5), out = (inp+1)^2.T: backward(ones) first, second (doubled), after zeroing",
       "out.backward(v, retain_graph=True); inp.grad.zero_()", "jax.vjp(f, inp)[1](v); sums written out"),
    _E("control_flow", "autograd_internals", "003 Q3 §一.2", "data-dependent control flow (if x.sum() > 0)",
       "Python if on tensor values, graph rebuilt each call", "Python if under jax.grad; lax.cond under jit"),
    _E("custom_function", "autograd_internals", "003 Q3 §三.1", "custom MyAdd autograd.Function <-> jax.custom_vjp",
       "class MyAdd(torch.autograd.Function): forward/backward", "@jax.custom_vjp with defvjp(fwd, bwd)"),
    _E("nonscalar_backward", "autograd_internals", "003 Q3 §三.3", "y = 2x, backward(gradient=[0.1, 0.2]) -> [0.2, 0.4]",
       "y.backward(gradient=v)", "jax.vjp(f, x)[1](v)"),
    _E("retain_grad", "autograd_internals", "003 Q3 §六.3", "gradient of an intermediate (y = 2x; d in the 42/28 chain)",
       "y.retain_grad(); y.grad", "split f at the intermediate: jax.vjp(head)...; jax.grad(tail)(y)"),
    _E("relu_at_zero", "autograd_internals", "003 Q1 §四.2", "ReLU at [-1, 0, 2]: gradient [0, 0, 1] (relu'(0) = 0 in both)",
       "torch.relu(x).backward(ones)", "jax.vjp(jax.nn.relu, x)[1](ones)"),
    _E("checkpointing", "autograd_internals", "003 Q3 §三.4, Q4 §五.1", "gradient checkpointing: same gradients, less memory",
       "torch.utils.checkpoint.checkpoint(layer, x)", "jax.checkpoint(layer) (remat)"),
    _E("grad_clipping", "autograd_internals", "003 Q3 §五.3", "clip by global norm 1.0",
       "nn.utils.clip_grad_norm_(params, 1.0)", "optax.clip_by_global_norm(1.0)"),
    _E("mixed_precision", "autograd_internals", "003 Q3 §五.2, Q4 §五.2",
       "bf16 needs no loss scaling, float16 does (and overflows at 2^16)",
       "torch.autocast('cpu', dtype); torch.amp.GradScaler('cpu')", "explicit casts; scale loss, unscale grads, skip on inf"),
    _E("fd_error_vs_h", "numerical", "003 Q4 §三.1, §六", "central-difference error vs h: O(h^2) + O(eps/h), optimum near eps^(1/3)",
       "(f(x+h) - f(x-h)) / 2h in torch float32/float64", "the same in jnp; exact derivative by jax.grad"),
    _E("exp_at_20", "numerical", "003 Q4 §三.1", "d/dx e^x at x = 20: finite differences vs autodiff",
       "torch.autograd.grad(torch.exp(x), x)", "jax.grad(jnp.exp)(x)"),
    _E("sqrt_cancellation", "numerical", "003 Q4 §三.3", "sqrt(x^2+1) - x at large x: cancellation vs 1/(sqrt(x^2+1)+x)",
       "autograd of each form", "jax.grad of each form"),
    _E("fd_cost", "numerical", "003 Q4 §一", "gradient cost: 2n evaluations by finite differences vs one reverse pass",
       "n perturbed forwards vs loss.backward()", "n perturbed forwards vs jax.grad"),
    _E("numerical_stability", "numerical", "003 Q4", "the whole numerical study, with PNG plots (--out DIR)",
       "finite differences vs autograd in torch", "finite differences vs jax.grad; matplotlib plots",
       writes_files=True),
    _E("q_backward", "blitz", "004 Differentiation in Autograd", "Q = 3a^3 - b^2: a.grad = [36, 81], b.grad = [-12, -8]",
       "Q.backward(gradient=ones)", "jax.vjp(Q, a, b)[1](ones)"),
    _E("vjp_jacobian", "blitz", "004 Vector Calculus", "J^T v equals the vector-Jacobian product",
       "torch.autograd.functional.jacobian; Q.backward(v)", "jax.jacrev; jax.vjp"),
    _E("requires_grad_propagation", "blitz", "004 Exclusion from the DAG",
       "a = x + y needs no grad, b = x + z does", "z.requires_grad=True; a.requires_grad",
       "differentiate w.r.t. z: only outputs that depend on z get tangents"),
    _E("x1_x2_x3", "blitz", "004 torch.Tensor.backward", "y2 = x1*x2 + x3: [4,5,6], [1,2,3], [1,1,1]",
       "z.backward() / y2.backward(ones)", "jax.grad(sum) / jax.vjp(..)[1](ones)"),
    _E("ones_mean", "blitz", "004 torch.Tensor.backward (requires_grad_)", "x = ones(2,2), out = mean(3 (x+2)^2) = 27, x.grad = 4.5",
       "a.requires_grad_(True); out.backward(); grad_fn names", "jax.value_and_grad(f, has_aux=True) returns out and y, z"),
    _E("mlp_intermediates", "blitz", "004 A simple MLP", "gradients of y2, y1 and the hand formulas x^T @ y1_grad, column sums",
       "autograd.grad(l, y2, retain_graph=True)", "jax.grad of the tail at the intermediate"),
    _E("mlp_seed_numbers", "blitz", "004 A simple MLP (printout)", "the seed's printed y2_grad and b1.grad recomputed",
       "2 * (y2 - y); y1_grad.sum(0)", "jax.grad / jax.vjp at the seed's numbers"),
    _E("resnet18_step", "resnet18", "004 Usage in PyTorch", "resnet18 one SGD step (lr 1e-2, momentum 0.9): params agree",
       "loss.backward(); optim.SGD(...).step()", "jax.value_and_grad + optax.sgd(1e-2, momentum=0.9)",
       weights_from_torch=True),
    _E("resnet18_finetune", "resnet18", "004 Exclusion from the DAG (fine-tuning)",
       "freeze resnet18, train a new Linear(512, 10): only it changes",
       "param.requires_grad = False; model.fc = nn.Linear(512, 10)",
       "lax.stop_gradient on frozen params + optax.multi_transform(set_to_zero)", weights_from_torch=True),
    _E("timestep_contributions", "multitask", "000 问题一 Step 4", "per-timestep contributions to the CNN's gradient sum to the full one",
       "feats.retain_grad(); autograd.grad(feats, cnn, grad_outputs=mask_t * g)",
       "jax.vjp(encode_frames)[1](mask_t * g) per t", weights_from_torch=True),
    _E("concat_split", "multitask", "000 问题一 Step 3", "the concat splits the gradient between CNN features and dynamic data",
       "fused.retain_grad(); feats.grad, dyn.grad", "jax.grad w.r.t. (feats, dyn) and w.r.t. fused", weights_from_torch=True),
    _E("weighted_loss_sum", "multitask", "000 问题二", "grad of the total = weighted sum of the three losses' grads",
       "autograd.grad per loss with retain_graph=True", "one jax.vjp, one pullback per loss", weights_from_torch=True),
    _E("stepwise_vs_joint", "multitask", "000 问题二 (warning)", "update after loss A, then backprop loss B != one joint step",
       "optimizer.step() between backward calls", "two jax.grad calls at different params", weights_from_torch=True),
    _E("higher_order", "higher_order", "002 retain_graph table (二阶导数)", "d/dx, d2/dx2, d3/dx3 of x^3 at x = 2: 12, 12, 6",
       "autograd.grad(..., create_graph=True)", "jax.grad(jax.grad(f))"),
    _E("hessian", "higher_order", "concept map (create_graph / higher order)", "Hessian of a small function",
       "torch.autograd.functional.hessian", "jax.hessian"),
    _E("retracing", "higher_order", "002 More on Computational Graphs; 004 DAG is dynamic",
       "torch rebuilds the graph each call; jit traces once per shape/static value",
       "new graph every forward", "jax.jit cache: retrace on new shapes or static args"),
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

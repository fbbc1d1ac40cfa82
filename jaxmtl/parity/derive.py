"""The conversion table derived from the two modules, instead of written by hand.

    table = derive_table(torch_module, nnx_module, run_torch, run_jax)
    print(table_source(table))            # freeze it, review it, commit it

The rules, in order; anything they do not settle is one `DerivationError`
listing both sides' candidates, never a guess:

1. Layers (modules that own tensors, see `jaxmtl.parity.layers`) are listed on
   each side in the order one forward pass first calls them (`run_torch(module)`,
   `run_jax(model)`, the latter abstractly), then the layers the forward never
   calls, in declaration order.
2. Each torch layer, in that order, is paired with one of the unpaired JAX
   layers whose tensors it can be matched with (rule 3): the one whose path
   shares the most words with the torch name (`layer1.0.downsample.1` <->
   `layer1/0/downsample_bn`), and among equals the first in the JAX order. So a
   port may name its attributes as it likes and declare them in any order:
   layers that look alike in shape and name pair up in the order they run.
3. Inside a layer pair, each torch tensor gets its layout from its module type
   and name (`LAYOUT_RULES`: Conv weights `conv`, Linear and RNN weights `matrix`
   or a gate stack, norm counters `count`, anything else the same array), and
   the JAX tensor of the same collection (parameters <-> `nnx.Param`, buffers <->
   `nnx.BatchStat`) whose shape that layout produces. Several such tensors are
   told apart by name (`weight` ~ `kernel`/`scale`/`w`, `bias` ~ `b`,
   `running_mean` ~ `mean`, `ih` ~ `ih`, ...); a tie is an error.
4. Every tensor on both sides must be used exactly once.

The derived rows come out in the torch `state_dict` order.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Sequence

from jaxmtl.parity.layers import Layer, Tensor, nnx_call_order, nnx_layers, torch_call_order, torch_layers
from jaxmtl.parity.tables import LAYOUTS, Entry


class DerivationError(ValueError):
    """The two modules cannot be paired without guessing: lists both sides' candidates."""


class LayerPair(NamedTuple):
    torch: Layer
    jax: Layer
    entries: tuple          # of Entry


GATES = {"GRU": "gates3", "GRUCell": "gates3", "LSTM": "gates4", "LSTMCell": "gates4"}


def candidate_layouts(module_type: str, tensor: Tensor) -> tuple[str, ...]:
    """The layouts a torch tensor may take on the JAX side, by module type and tensor name."""
    name, ndim = tensor.name, len(tensor.shape)
    if name == "num_batches_tracked":
        return ("count",)
    if re.fullmatch(r"Conv(Transpose)?[123]d|LazyConv[123]d", module_type) and name == "weight":
        return ("conv",)
    if module_type in ("Linear", "LazyLinear") and name == "weight":
        return ("matrix",)
    if module_type in ("RNN", "RNNCell", *GATES) and name.startswith(("weight", "bias")):
        gates = (GATES[module_type],) if module_type in GATES else ()
        return (("matrix",) if ndim == 2 else ("vector",)) + gates
    return ("vector", "matrix") if ndim == 2 else ("vector",)


LAYOUT_RULES = candidate_layouts  # the public name the docs refer to

# Name tokens that mean the same thing on both sides.
SYNONYMS = {"w": "weight", "kernel": "weight", "scale": "weight", "gamma": "weight", "embedding": "weight",
            "b": "bias", "beta": "bias", "running": "", "variance": "var", "tracked": "count",
            "num": "", "batches": "", "count": "count"}


def _tokens(name: str) -> set[str]:
    out = set()
    for t in re.split(r"[_.]", name.lower()):
        t = SYNONYMS.get(t, t)
        if t and not re.fullmatch(r"l?\d+", t):  # layer indices (weight_ih_l0) carry no meaning here
            out.add(t)
    return out


def _describe(layer: Layer) -> str:
    return f"{layer.name or '(root)'} {layer.type}(" + ", ".join(
        f"{t.name}{'*' if t.collection == 'batch_stats' else ''} {t.shape}" for t in layer.tensors) + ")"


def match_tensors(t_layer: Layer, j_layer: Layer) -> tuple[Entry, ...] | str:
    """The entries pairing every tensor of the two layers (rule 3), or why they do not pair."""
    rows, used = [], set()
    for t in t_layer.tensors:
        options = []
        for kind in candidate_layouts(t_layer.type, t):
            shape = LAYOUTS[kind].jax_shape(t.shape)
            options += [(j, kind) for j in j_layer.tensors
                        if j.collection == t.collection and j.shape == shape and j.name not in used]
        if not options:
            return f"no JAX tensor fits torch {t.name} {t.shape}"
        if len(options) > 1:
            scores = [len(_tokens(t.name) & _tokens(j.name)) for j, _ in options]
            best = max(scores)
            options = [o for o, s in zip(options, scores) if s == best]
            if len(options) > 1:
                return (f"torch {t.name} {t.shape} fits several JAX tensors equally well: "
                        + ", ".join(f"{j.name} {j.shape} as {k}" for j, k in options))
        j, kind = options[0]
        used.add(j.name)
        prefix_t = f"{t_layer.name}." if t_layer.name else ""
        prefix_j = f"{j_layer.name}/" if j_layer.name else ""
        rows.append(Entry(prefix_t + t.name, prefix_j + j.name, t.collection, kind, tuple(t.shape)))
    unused = [j.name for j in j_layer.tensors if j.name not in used]
    if unused:
        return f"JAX tensors {unused} have no torch counterpart"
    return tuple(rows)


def _ordered(layers: dict, called: Sequence[str]) -> list[Layer]:
    return [layers[n][0] for n in called] + [layer for n, (layer, _) in layers.items() if n not in called]


def _path_tokens(name: str) -> set[str]:
    return set(re.split(r"[./_]", name.lower())) - {""}


def pair_layers(torch_order: Sequence[Layer], jax_order: Sequence[Layer]) -> list[LayerPair]:
    """Rules 2-4 on two ordered layer lists."""
    free = list(jax_order)
    pairs, problems = [], []
    for t in torch_order:
        fits, why = [], {}
        for j in free:
            rows = match_tensors(t, j)
            if isinstance(rows, tuple):
                fits.append((j, rows))
            else:
                why[j.name] = rows
        if not fits:
            near = sorted(free, key=lambda j: (j.type.lower() != t.type.lower(),
                                               -len(_path_tokens(t.name) & _path_tokens(j.name))))[:4]
            problems.append(f"torch layer {_describe(t)} matches no JAX layer; nearest candidates:"
                            + "".join(f"\n      {_describe(j)}: {why.get(j.name, '')}" for j in near))
            continue
        # The most path tokens in common wins; among equals, the first in JAX call order.
        score = [len(_path_tokens(t.name) & _path_tokens(j.name)) for j, _ in fits]
        j, rows = fits[score.index(max(score))]
        free.remove(j)
        pairs.append(LayerPair(t, j, rows))
    problems += [f"JAX layer {_describe(j)} matches no torch layer" for j in free]
    if problems:
        raise DerivationError("cannot derive the conversion table:\n  " + "\n  ".join(problems)
                              + "\n(write the table by hand for these layers: jaxmtl.parity.tables.Entry)")
    return pairs


def derive_layer_pairs(torch_module, nnx_module, run_torch: Callable[[Any], Any],
                       run_jax: Callable[[Any], Any], dtype=None) -> list[LayerPair]:
    """The layer pairs of the two modules; `run_*` run one forward pass of the given model."""
    t_layers, j_layers = torch_layers(torch_module), nnx_layers(nnx_module)
    t_order = _ordered(t_layers, torch_call_order(torch_module, run_torch))
    j_order = _ordered(j_layers, nnx_call_order(nnx_module, run_jax, dtype))
    return pair_layers(t_order, j_order)


def derive_table(torch_module, nnx_module, run_torch: Callable[[Any], Any],
                 run_jax: Callable[[Any], Any], dtype=None) -> list[Entry]:
    """The conversion table between the modules (rows in torch `state_dict` order).

    `run_torch(torch_module)` and `run_jax(nnx_module)` each run one forward
    pass on example inputs; the NNX module may be abstract (`nnx.eval_shape`),
    and its floating state is taken as `dtype` (that of the inputs) if given.
    """
    rows = {e.torch_key: e for p in derive_layer_pairs(torch_module, nnx_module, run_torch, run_jax, dtype)
            for e in p.entries}
    return [rows[k] for k in torch_module.state_dict() if k in rows]

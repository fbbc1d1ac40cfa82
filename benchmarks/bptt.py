"""BPTT through the GRU: lax.scan vs Python-unrolled loop under jit vs scan(unroll=k), and torch nn.GRU."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import (aot_compile, machine_info, set_torch_threads, time_budgeted,
                               write_results)
from jaxmtl.config import get_config
from jaxmtl.nn.gru import gru_cell, gru_scan

T_VALUES = (4, 8, 16, 32, 64)


def gru_loss(variant: str):
    """loss(params, x, target) of a GRU over x (B, T, in), with the recurrence written per `variant`:
    "scan" (lax.scan), "unrolled" (Python loop: T copies of the cell in the graph), "scan_unroll{k}"."""

    def loss(params, x, target):
        w_ih, w_hh, b_ih, b_hh = params
        gi = jnp.einsum("bti,ig->tbg", x, w_ih) + b_ih
        h = jnp.zeros((x.shape[0], w_hh.shape[0]), x.dtype)
        if variant == "unrolled":
            hs = []
            for t in range(gi.shape[0]):
                h = gru_cell(gi[t], h, w_hh, b_hh)
                hs.append(h)
            hs = jnp.stack(hs)
        else:
            unroll = 1 if variant == "scan" else int(variant.removeprefix("scan_unroll"))
            h, hs = gru_scan(gi, h, w_hh, b_hh, unroll=unroll)
        return jnp.mean(jnp.square(hs - target))

    return jax.value_and_grad(loss)


def run_t(t: int, b: int, n_in: int, hidden: int, budget_s: float, variants: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng(t)
    s = 1.0 / np.sqrt(hidden)
    params = tuple(jnp.asarray(rng.uniform(-s, s, shape), jnp.float32)
                   for shape in ((n_in, 3 * hidden), (hidden, 3 * hidden), (3 * hidden,), (3 * hidden,)))
    x = jnp.asarray(rng.standard_normal((b, t, n_in)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((t, b, hidden)), jnp.float32)
    row: dict[str, Any] = {"T": t}
    for v in variants:
        compiled, compile_s = aot_compile(gru_loss(v), params, x, target)
        row[v] = {"compile_s": compile_s,
                  "step": time_budgeted(lambda: compiled(params, x, target), budget_s, min_reps=5)}
    import torch

    gru = torch.nn.GRU(n_in, hidden, batch_first=True)
    tx = torch.from_numpy(np.asarray(x))
    tt = torch.from_numpy(np.asarray(jnp.swapaxes(target, 0, 1)))

    def torch_step():
        gru.zero_grad(set_to_none=True)
        loss = torch.mean(torch.square(gru(tx)[0] - tt))
        loss.backward()
        return loss.detach()

    row["torch_gru"] = {"step": time_budgeted(torch_step, budget_s, min_reps=5)}
    return row


def plot(rows: list[dict[str, Any]], variants: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [r["T"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for v in variants:
        a1.plot(ts, [r[v]["compile_s"] for r in rows], "o-", label=v)
        a2.plot(ts, [r[v]["step"]["median"] * 1e3 for r in rows], "o-", label=v)
    a2.plot(ts, [r["torch_gru"]["step"]["median"] * 1e3 for r in rows], "s--", label="torch nn.GRU (eager)")
    a1.set(xlabel="T", ylabel="compile time (s)", title="GRU fwd+bwd: compile time vs T", xscale="log")
    a2.set(xlabel="T", ylabel="step time (ms)", title="GRU fwd+bwd: step time vs T", xscale="log")
    for a in (a1, a2):
        a.set_xticks(ts, [str(t) for t in ts])
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_rows(rows: list[dict[str, Any]], variants: list[str]) -> None:
    print(f"{'T':>4}" + "".join(f"{v + ' compile s':>24}" for v in variants)
          + "".join(f"{v + ' ms':>19}" for v in variants + ["torch_gru"]))
    for r in rows:
        print(f"{r['T']:4}" + "".join(f"{r[v]['compile_s']:24.2f}" for v in variants)
              + "".join(f"{r[v]['step']['median'] * 1e3:19.2f}" for v in variants + ["torch_gru"]))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="resnet18", help="GRU sizes (B, D+F_dyn, H_gru) from this config")
    p.add_argument("--T", default=",".join(map(str, T_VALUES)))
    p.add_argument("--unroll", default="4", help="k values for scan(unroll=k), comma separated")
    p.add_argument("--budget", type=float, default=1.0)
    p.add_argument("--out", default="bench_out/bptt")


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = get_config(args.config)
    ts = [int(v) for v in args.T.split(",")]
    variants = ["scan", "unrolled"] + [f"scan_unroll{int(k)}" for k in args.unroll.split(",") if k]
    set_torch_threads()
    rows = [run_t(t, cfg.batch_size, cfg.gru_input_dim, cfg.gru_hidden, args.budget, variants) for t in ts]
    res = {"machine": machine_info(), "config": cfg.name, "batch_size": cfg.batch_size,
           "gru_input": cfg.gru_input_dim, "gru_hidden": cfg.gru_hidden, "variants": variants, "rows": rows}
    write_results(args.out, res)
    plot(rows, variants, Path(args.out) / "bptt_compile_vs_T.png")
    print_rows(rows, variants)
    return res

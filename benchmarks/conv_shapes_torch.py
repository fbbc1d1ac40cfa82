"""torch's own convolution on each conv shape of `convshapes`, in a process of its own.

  python -m benchmarks.conv_shapes_torch SHAPES_JSON BUDGET_S [--torch-threads N]

Started by `python -m benchmarks convshapes` before its JAX measurements, so
the two never run at once (benchmarks/mode_processes.py says why one process
per framework). It inherits the parent's allocator (mimalloc via LD_PRELOAD)
and applies the same allocator settings. SHAPES_JSON is the list of
`conv_shapes` rows; the answer, on stdout, is one JSON object
{"torch_threads": n, "rows": [{"fwd": stats, "dx": stats, "dw": stats}, ...]}
in the same order. Tensors are NCHW, as torch_ref's model runs; dX and dW are
`aten.convolution_backward` with one output each (the step asks for both at
once, which torch may do in one pass: the separate figures are an upper
bound of its backward).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from jaxmtl.cpu_malloc import keep_freed_memory


def torch_directions(shape: dict[str, Any], budget_s: float) -> dict[str, Any]:
    """Timing stats of torch's forward, dX and dW for one `conv_shapes` row."""
    import torch

    from benchmarks.timing import time_budgeted

    g = torch.Generator().manual_seed(0)
    n, h, cin, cout, k, s, p = (shape[f] for f in ("n", "h", "cin", "cout", "k", "stride", "pad"))
    x = torch.randn(n, cin, h, h, generator=g)
    w = torch.randn(cout, cin, k, k, generator=g)
    dy = torch.randn_like(torch.nn.functional.conv2d(x, w, stride=s, padding=p))

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                                           mask)

    return {"fwd": time_budgeted(lambda: torch.nn.functional.conv2d(x, w, stride=s, padding=p), budget_s),
            "dx": time_budgeted(backward([True, False, False]), budget_s),
            "dw": time_budgeted(backward([False, True, False]), budget_s)}


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()  # first, before torch starts threads (as benchmarks/__main__.py)
    p = argparse.ArgumentParser(prog="python -m benchmarks.conv_shapes_torch", description=__doc__.split("\n")[0])
    p.add_argument("shapes", help="JSON list of conv_shapes rows")
    p.add_argument("budget", type=float, help="seconds of timing per direction")
    p.add_argument("--torch-threads", type=int, default=None)
    args = p.parse_args(argv)

    from benchmarks.timing import set_torch_threads

    threads = set_torch_threads(args.torch_threads)
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # nothing a library prints gets into the answer
    rows = [torch_directions(s, args.budget) for s in json.loads(args.shapes)]
    out.write(json.dumps({"torch_threads": threads, "rows": rows}) + "\n")
    out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])

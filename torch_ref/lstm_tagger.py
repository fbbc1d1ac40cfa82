"""A sequence tagger around one nn.LSTM, from stock torch layers: the reference of `jaxmtl/lstm_tagger.py`.

  x (B, T, F) --nn.LSTM--> hs (B, T, H) --tagger (Linear H->C)--> logits (B, T, C)
                           h_n[-1] (B, H) --regressor (Linear H->K)--> seq (B, K)

state_dict: lstm.weight_ih_l0 (4H, F), lstm.weight_hh_l0 (4H, H),
lstm.bias_ih_l0 (4H,), lstm.bias_hh_l0 (4H,) (gates i, f, g, o stacked on
dim 0), tagger.weight (C, H), tagger.bias (C,), regressor.weight (K, H),
regressor.bias (K,).
"""

from __future__ import annotations

import torch
from torch import nn

# The config is defined on the torch-free side so the port and jaxmtl.parity.lstm_port
# can use it without importing torch (as torch_ref/model.py uses jaxmtl.config.ModelConfig).
from jaxmtl.lstm_tagger import TaggerConfig

__all__ = ["TaggerConfig", "LSTMTagger", "build"]


class LSTMTagger(nn.Module):
    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        self.lstm = nn.LSTM(cfg.in_features, cfg.hidden, num_layers=1, batch_first=True)
        self.tagger = nn.Linear(cfg.hidden, cfg.num_tags)
        self.regressor = nn.Linear(cfg.hidden, cfg.seq_out)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hs, (h_n, _) = self.lstm(x)  # h0 = c0 = 0
        return {"logits": self.tagger(hs), "seq": self.regressor(h_n[-1])}


def build(cfg: TaggerConfig = TaggerConfig(), seed: int = 0,
          dtype: torch.dtype = torch.float64) -> LSTMTagger:
    """A freshly initialised tagger (torch's default inits), deterministic in `seed`."""
    with torch.random.fork_rng(devices=[]):  # leaves the global generator untouched
        torch.manual_seed(seed)
        return LSTMTagger(cfg).to(dtype)

"""Layers whose semantics follow torch exactly, in NHWC layout."""

from jaxmtl.nn.batchnorm import BatchNorm2d
from jaxmtl.nn.conv import Conv2d, conv2d
from jaxmtl.nn.gru import GRU, gru_cell, gru_scan
from jaxmtl.nn.init import torch_linear
from jaxmtl.nn.pooling import global_avg_pool, max_pool2d

__all__ = ["BatchNorm2d", "Conv2d", "conv2d", "GRU", "gru_cell", "gru_scan",
           "torch_linear", "global_avg_pool", "max_pool2d"]

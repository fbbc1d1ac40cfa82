"""The PyTorch reference: stock torch layers, losses and optimizers only.

It is the ground truth the JAX port is checked against; nothing in it
re-implements a torch layer. Mirrors `jaxmtl/` file for file.
"""

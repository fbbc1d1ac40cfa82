"""jaxmtl: a JAX/Flax NNX port of a PyTorch ResNet+GRU multi-task model, and the proof it is right.

The curated public API. `import jaxmtl` never imports torch.
"""

from jaxmtl.batch import Batch, random_batch, validate_batch
from jaxmtl.config import CONFIGS, RESNET18, SMALL, TINY, ModelConfig, get_config
from jaxmtl.functional import apply, init_model, loss_fn, make_grad_fn, make_part_grad_fn, split_model
from jaxmtl.losses import LOSS_PARTS, multitask_loss
from jaxmtl.model import MultiTaskModel
from jaxmtl.trees import flatten_state, rel_err, tree_rel_errs, unflatten_like
from jaxmtl.data import DataConfig, MotionDataset
from jaxmtl.optim import OptimConfig, make_optimizer, torch_clip_by_global_norm
from jaxmtl.train import JaxTrainer, TrainState, make_eval_step, make_train_step
from jaxmtl.loop import NonFiniteLossError, TrainConfig, fit

__all__ = [
    "Batch", "random_batch", "validate_batch",
    "CONFIGS", "RESNET18", "SMALL", "TINY", "ModelConfig", "get_config",
    "apply", "init_model", "loss_fn", "make_grad_fn", "make_part_grad_fn", "split_model",
    "LOSS_PARTS", "multitask_loss", "MultiTaskModel",
    "flatten_state", "rel_err", "tree_rel_errs", "unflatten_like",
    "DataConfig", "MotionDataset", "OptimConfig", "make_optimizer", "torch_clip_by_global_norm",
    "JaxTrainer", "TrainState", "make_eval_step", "make_train_step", "NonFiniteLossError", "TrainConfig", "fit",
]

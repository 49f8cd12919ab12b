"""Model layer: flax.linen modules (MLP, small CNN, CIFAR ResNets) behind a name registry.

Every model names its first layer ``stem`` and its classifier ``head``; see
``ARCHITECTURE.md`` for the shared contract.
"""

from snnjax.models.cnn import CNN
from snnjax.models.mlp import MLP
from snnjax.models.registry import MODELS
from snnjax.models.registry import create_model
from snnjax.models.registry import init_variables
from snnjax.models.registry import model_names
from snnjax.models.resnet import BasicBlock
from snnjax.models.resnet import ResNet

__all__ = ["BasicBlock", "CNN", "MLP", "MODELS", "ResNet", "create_model", "init_variables",
           "model_names"]

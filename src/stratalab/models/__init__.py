"""Small PyTorch models that run well on a CPU, and the one feature-extraction path, :func:`embed`."""

from .build import FEATURE_LAYERS, MODELS, Embedding, build_model, check_feature_layer, embed
from .convnets import CifarNet, CifarResNet, LeNet5, LinearHead
from .mlp import MLP
from .pretrained import load_pretrained, n_params, read_pretrained, save_pretrained

__all__ = ["FEATURE_LAYERS", "check_feature_layer", "MLP", "LeNet5", "CifarResNet", "CifarNet", "LinearHead", "build_model", "embed", "Embedding", "MODELS",
           "save_pretrained", "load_pretrained", "read_pretrained", "n_params"]

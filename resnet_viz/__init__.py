"""ResNet Lab: CIFAR ResNets (He et al. 2015) you can build, train and look inside."""

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig

__all__ = ["DataConfig", "ModelConfig", "RunConfig", "TrainConfig"]
__version__ = "0.1.0"

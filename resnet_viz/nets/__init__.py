"""The networks: CIFAR ResNets of He et al. 2015 (section 4.2), torchvision's ImageNet ResNets,
and their summaries (parameters, FLOPs, shapes). Depends on ``config`` only."""

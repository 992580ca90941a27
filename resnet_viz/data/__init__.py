"""Images in: data sources (CIFAR-10, class folders, synthetic shapes) decoded once into uint8
tensors and cached, batched augmentation, the model's input transform, and safe decoding of
uploads. Depends on ``config`` and ``fsutil``."""

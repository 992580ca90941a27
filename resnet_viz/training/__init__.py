"""Training: the loop (``fit``), learning-rate schedules, per-block probes, where records go,
device and precision, and torchrun's several processes. Reads ``nets``, ``data`` and ``store``."""

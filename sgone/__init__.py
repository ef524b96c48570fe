"""sgone: one-shot and few-shot semantic segmentation (SG-One and a training-free mode)."""

__version__ = "0.1.0"

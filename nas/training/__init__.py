"""Training: datasets, augmentation, the shared training loops, torchrun (DDP) and `nas train`'s retraining.

May import nas.core, search_spaces, latency and nas.deploy (retraining exports its model).
"""

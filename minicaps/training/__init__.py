"""Training: the config and layout presets, the loop, checkpoints, augmentation, evaluation."""

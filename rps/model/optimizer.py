"""Optimizer and loss from the optimizer config group."""

from __future__ import annotations

import keras

from rps.config.model import AdamConfig, AdamWConfig, OptimizerConfig, Schedule, SGDConfig


def learning_rate(cfg: OptimizerConfig, base_lr: float, total_steps: int):
    if cfg.schedule is Schedule.cosine:
        return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=max(total_steps, 1))
    return base_lr


def build(cfg: OptimizerConfig, base_lr: float, total_steps: int) -> keras.optimizers.Optimizer:
    """``base_lr`` is passed in because fine-tuning scales ``cfg.lr`` down."""
    lr = learning_rate(cfg, base_lr, total_steps)
    if isinstance(cfg, SGDConfig):
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if isinstance(cfg, AdamWConfig):
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    if isinstance(cfg, AdamConfig):
        return keras.optimizers.Adam(lr)
    raise TypeError(f"no optimizer for {type(cfg).__name__}")


def loss(cfg: OptimizerConfig) -> keras.losses.Loss:
    return keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=cfg.label_smoothing
    )

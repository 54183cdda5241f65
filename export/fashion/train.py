"""Training loop for the Fashion-MNIST zoo: fixed seeds, light augmentation, one-cycle schedule."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from export.fashion.data import Split
from service.core.registry import Recipe

PAD = 2  # random-crop padding, in pixels
AUGMENTATION = f"random crop {28}x{28} from a {PAD}-pixel zero-padded image, horizontal flip p=0.5"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    optimizer: str  # "sgd" (Nesterov momentum 0.9) or "adamw"
    lr: float  # peak of the one-cycle schedule
    weight_decay: float
    batch_size: int = 128
    seed: int = 0
    train_samples: int | None = None  # None: the whole training split


def _optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            module.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"Unknown optimizer {cfg.optimizer}")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifted crops and horizontal flips, on [0, 1] pixels (the padding is background black)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def train(
    module: nn.Module,
    data: Split,
    cfg: TrainConfig,
    *,
    mean: float,
    std: float,
    desc: str = "train",
    progress: bool = True,
) -> Recipe:
    """Train `module` in place and return the recipe that was followed, with its wall time."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.from_numpy(data.images.copy())  # the IDX buffer is read-only
    labels = torch.from_numpy(data.labels)
    if cfg.train_samples is not None and cfg.train_samples < len(labels):
        chosen = torch.randperm(len(labels), generator=gen)[: cfg.train_samples]
        images, labels = images[chosen], labels[chosen]
    n = len(labels)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    optimizer = _optimizer(module, cfg)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch
    )
    module.to(memory_format=torch.channels_last).train()
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc=desc, unit="batch", disable=not progress, leave=True)
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = _augment(images[idx].float().div_(255).unsqueeze(1), gen)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(module(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{loss.item():.3f}", refresh=False)
            bar.update()
    bar.close()
    module.to(memory_format=torch.contiguous_format).eval()
    return Recipe(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer="SGD (Nesterov, momentum 0.9)" if cfg.optimizer == "sgd" else "AdamW",
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        schedule="one-cycle (cosine), peak lr at 30% of the steps",
        augmentation=AUGMENTATION,
        seed=cfg.seed,
        train_samples=n,
        wall_s=round(time.perf_counter() - start, 1),
    )

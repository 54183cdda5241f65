"""The catalog as people meet it: the command that builds a model, the known name closest to a mistyped
one, and the one start-up line that sums the registry up."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Protocol

from service.core.registry import ModelEntry

# The export stage needs PyTorch, which only the development environment has (`make run`'s serving
# environment has none): its commands name that environment's interpreter.
EXPORT = ".venv/bin/python -m export"
FASHION = "make models"  # trains and exports every Fashion-MNIST model (about 26 min on 2 vCPU)
IMAGENET = EXPORT + " build --zoo imagenet --models {name}"
QUANTIZE = EXPORT + " quantize --model {source}"
QUANTIZE_IMAGENET = QUANTIZE + " --calibration-images DIR --agreement-images DIR"

# difflib's ratio above which a known name is offered for a mistyped one: 0.6 (difflib's default) offers
# resnet50 for "resnet5O" and nothing for a name unlike any.
CLOSE = 0.6


def _recipe(entry: ModelEntry) -> str:
    """The build command of `entry`, with {name} and {source} still to fill in."""
    fashion = entry.dataset == "fashion-mnist"
    if entry.quantization is not None:
        return QUANTIZE if fashion else QUANTIZE_IMAGENET
    return FASHION if fashion else IMAGENET


def build_command(entry: ModelEntry) -> str:
    """The command that writes `entry`'s artifact (and records it in registry.yaml)."""
    source = entry.quantization.quantized_from if entry.quantization is not None else entry.name
    return _recipe(entry).format(name=entry.name, source=source)


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name a mistyped `name` most likely meant: the same but for case and '-' or '_', else the
    shortest that contains it (fmnist-lenet5 for "lenet5", where difflib prefers resnet50), else difflib's
    closest above CLOSE; None when no name is close."""
    by_normal = {_normal(k): k for k in known}
    wanted = _normal(name)
    if wanted in by_normal:
        return by_normal[wanted]
    containing = [n for n in by_normal if wanted in n] if len(wanted) >= 3 else []
    if containing:
        return by_normal[min(containing, key=lambda n: (len(n), n))]
    matches = difflib.get_close_matches(wanted, list(by_normal), n=1, cutoff=CLOSE)
    return by_normal[matches[0]] if matches else None


class Entry(Protocol):
    """What the summary reads of a model's state (service.models.manager.ModelState)."""

    @property
    def entry(self) -> ModelEntry: ...

    @property
    def status(self) -> str: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def build_command(self) -> str | None: ...


def summary(states: Sequence[Entry], default: str) -> str:
    """One line for the whole catalog, e.g. `catalog: 43 models, 19 servable, 24 not built (make models;
    .venv/bin/python -m export build --zoo imagenet --models NAME); default efficientnet_lite0`."""
    not_built = [s for s in states if s.build_command is not None]
    other = [s for s in states if s.status == "unavailable" and s.build_command is None]
    servable = len(states) - len(not_built) - len(other)
    parts = [f"catalog: {len(states)} models", f"{servable} servable"]
    if not_built:
        recipes = dict.fromkeys(_recipe(s.entry).format(name="NAME", source="NAME") for s in not_built)
        parts.append(f"{len(not_built)} not built ({'; '.join(recipes)})")
    if other:
        parts.append(f"{len(other)} unavailable for other reasons (GET /models says why)")
    return f"{', '.join(parts)}; default {default}"

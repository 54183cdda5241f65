"""Readiness: the default model and every preloaded one loaded and warmed up, and a text that says which are
still loading or unavailable, and why."""

from __future__ import annotations

from collections.abc import Sequence

from service.models.state import ModelState


def _role(state: ModelState, default: str) -> str:
    return "default model" if state.entry.name == default else "preloaded model"


def readiness(required: Sequence[ModelState], default: str) -> tuple[bool, str, dict[str, list[str]]]:
    """Whether the `required` models (the default and the preloads) are all loaded; the reason; the names
    loaded, loading and unavailable."""
    broken = [s for s in required if s.status == "unavailable"]
    waiting = [s for s in required if s.status in ("available", "loading")]
    lists = {
        "loaded": [s.entry.name for s in required if s.is_loaded],
        "loading": [s.entry.name for s in waiting],
        "unavailable": [s.entry.name for s in broken],
    }
    if broken:
        reasons = "; ".join(f"{_role(s, default)} {s.entry.name} is unavailable: {s.reason}" for s in broken)
        return False, reasons, lists
    if waiting:
        still = ", ".join(f"{_role(s, default)} {s.entry.name} ({s.status})" for s in waiting)
        return False, f"still loading, not yet warmed up: {still}", lists
    others = [s.entry.name for s in required if s.entry.name != default]
    also = f" and preloaded model(s) {', '.join(others)} are" if others else " is"
    return True, f"default model {default}{also} loaded and warmed up", lists

"""Pretrained checkpoints for torchvision models, loaded as tensors only.

A checkpoint comes from, in this order: a local file the user names (`--weights-file`), the torch hub
cache (`torch.hub.get_dir()/checkpoints`, where torchvision itself keeps downloads), or a download of
the URL in torchvision's weight enum. Every file is read with `torch.load(..., weights_only=True)`:
nothing is unpickled beyond tensors. A file counts as torchvision's published checkpoint only when
its SHA-256 starts with the hash prefix in the release file name, as torch hub checks it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models._api as tv_api
from torchvision.models import WeightsEnum

from service.core.registry import sha256_file

DOWNLOAD_TIMEOUT_S = 20.0
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")  # torch hub's convention: name-<sha256 prefix>.pth


class WeightsUnavailable(FileNotFoundError):
    """No usable checkpoint could be found or fetched."""


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    source: str  # where the tensors came from, for the registry
    published: bool  # the exact bytes torchvision released, so its published accuracy applies


def release_file(weights: WeightsEnum) -> str:
    url: str = weights.url
    return url.rsplit("/", 1)[-1]


def hub_cache_path(weights: WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / release_file(weights)


def hash_prefix(file_name: str) -> str | None:
    """The leading hex digits of the file's sha256 that its name carries (name-<prefix>.pth), if any."""
    match = _HASH_PREFIX.search(file_name)
    return match.group(1) if match and match.group(1) else None


def _hash_prefix(weights: WeightsEnum) -> str | None:
    return hash_prefix(release_file(weights))


def is_published(weights: WeightsEnum, digest: str) -> bool:
    prefix = _hash_prefix(weights)
    return prefix is not None and digest.startswith(prefix)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `path`, tensors only; a {'state_dict': ...} or {'model': ...} wrapper is opened."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises UnpicklingError, RuntimeError, OSError... for bad files)
        raise WeightsUnavailable(f"cannot read checkpoint {path}: {exc}") from None
    if isinstance(raw, dict):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if (
        not isinstance(raw, dict)
        or not raw
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items())
    ):
        raise WeightsUnavailable(f"checkpoint {path} is not a state dict of named tensors")
    return dict(raw)


def download(
    url: str, destination: Path, *, expected_prefix: str | None, timeout: float = DOWNLOAD_TIMEOUT_S
) -> None:
    """Fetch `url` to `destination` atomically, checking the hash prefix; fails fast when offline."""
    from tqdm import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                tempfile.NamedTemporaryFile(dir=destination.parent, delete=False, suffix=".partial") as out,
                tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as bar,
            ):
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsUnavailable(f"download of {url} failed: {reason}") from None
    partial = Path(out.name)
    if expected_prefix is not None and not digest.hexdigest().startswith(expected_prefix):
        partial.unlink(missing_ok=True)
        raise WeightsUnavailable(f"download of {url} does not match its published checksum")
    os.replace(partial, destination)


def refusal(weights: WeightsEnum, name: str, reason: str) -> str:
    cache = hub_cache_path(weights)
    return (
        f"No weights for {name} ({weights}): {reason}. Supply them in one of three ways: "
        f"(1) run online, and torchvision's download from {weights.url} is used; "
        f"(2) put {cache.name} into the torch hub cache {cache.parent} (set TORCH_HOME to move it); "
        f"(3) pass --weights-file PATH, a state dict saved with torch.save(model.state_dict(), PATH). "
        f"Or pass --random-weights to export the architecture with random weights and no accuracy."
    )


def obtain(
    weights: WeightsEnum, name: str, *, weights_file: Path | None, allow_download: bool = True
) -> Checkpoint:
    """The checkpoint for `weights`, from the user's file, the hub cache or a download; else a refusal."""
    if weights_file is not None:
        return _from_file(weights, weights_file)
    cache = hub_cache_path(weights)
    if not cache.is_file():
        if not allow_download:
            raise WeightsUnavailable(refusal(weights, name, f"{cache} does not exist and downloads are off"))
        try:
            download(weights.url, cache, expected_prefix=_hash_prefix(weights))
        except WeightsUnavailable as exc:
            raise WeightsUnavailable(
                refusal(weights, name, f"{cache} does not exist and the {exc}")
            ) from None
    if not is_published(weights, sha256_file(cache)):
        raise WeightsUnavailable(
            refusal(weights, name, f"the cached {cache} does not match the published checksum; delete it")
        )
    return Checkpoint(load_tensors(cache), f"torchvision {weights} ({weights.url})", published=True)


def _from_file(weights: WeightsEnum, path: Path) -> Checkpoint:
    if not path.is_file():
        raise WeightsUnavailable(f"--weights-file {path} does not exist")
    digest = sha256_file(path)
    tensors = load_tensors(path)
    if is_published(weights, digest):
        return Checkpoint(tensors, f"torchvision {weights}, local copy {path.name}", published=True)
    source = f"local checkpoint {path.name} (sha256 {digest[:16]}), not torchvision's release of {weights}"
    return Checkpoint(tensors, source, published=False)


@contextmanager
def supplying(state_dict: dict[str, torch.Tensor]) -> Iterator[None]:
    """Make torchvision's builders take `state_dict` instead of loading their checkpoint file.

    Their own loader unpickles with weights_only=False; handing them tensors we loaded ourselves keeps
    every builder adjustment (GoogLeNet/Inception input transform and dropped auxiliary heads,
    DenseNet key renames) while nothing beyond tensors is unpickled.
    """
    original = tv_api.load_state_dict_from_url

    def supply(url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        return dict(state_dict)  # builders may rename keys in place

    tv_api.load_state_dict_from_url = supply
    try:
        yield
    finally:
        tv_api.load_state_dict_from_url = original

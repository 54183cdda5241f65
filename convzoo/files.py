"""The images of a run: files, glob patterns and folders expanded into a sorted list of paths."""

from __future__ import annotations

import glob
from pathlib import Path

# The raw body types the service accepts (API.md, POST /classify), by file suffix.
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


class NoSuchInput(ValueError):
    """An argument that is no file or folder and matches no file."""


def content_type(path: Path) -> str:
    """The Content-Type sent with the file; a file named on the command line with another suffix goes as
    bytes, and the service's 415 is recorded for it."""
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in CONTENT_TYPES


def _folder(folder: Path) -> list[Path]:
    # Folders and patterns yield only image files: a photo folder's sidecars (.xmp, .txt) are no errors.
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))


def _pattern(pattern: str) -> list[Path]:
    return sorted(
        Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file() and is_image(Path(p))
    )


def expand(inputs: list[str]) -> list[Path]:
    """Every image named by `inputs` (a file as given, a folder's images recursively, a glob's matches),
    each once, as absolute paths in the order of the arguments."""
    seen: set[Path] = set()
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths = _folder(path)
        elif path.is_file():
            paths = [path]
        elif glob.has_magic(item):
            paths = _pattern(item)
            if not paths:
                raise NoSuchInput(f"{item}: no image file matches this pattern")
        else:
            raise NoSuchInput(f"{item}: no such file or folder")
        for p in paths:
            absolute = p.absolute()
            if absolute not in seen:
                seen.add(absolute)
                found.append(absolute)
    return found

"""bench.cli's folder of photos: the stated number of distinct, decodable JPEGs, made again only when the
count changes."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bench.cli import photos


def test_the_folder_holds_the_stated_photos(tmp_path: Path) -> None:
    made = photos(tmp_path, 6)
    assert [p.name for p in made] == [f"photo-{i:05d}.jpg" for i in range(6)]
    assert len({p.read_bytes() for p in made}) == 6
    for path in made:
        with Image.open(path) as image:
            assert image.format == "JPEG" and 320 <= max(image.size) <= 640
    stamp = made[0].stat().st_mtime_ns
    assert photos(tmp_path, 6) == made and made[0].stat().st_mtime_ns == stamp  # reused
    assert len(photos(tmp_path, 3)) == 3 and len(list(tmp_path.glob("*.jpg"))) == 3

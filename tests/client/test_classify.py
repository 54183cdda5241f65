"""`convzoo classify` end to end against a live service: progress, CSV and JSON lines, a broken file
among good ones, resume from the output of an earlier run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx

from tests.client.conftest import Photos, convzoo, settled_classified
from tests.live import Server


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_to_csv_with_progress_and_a_broken_file(
    server: Server, photos: Photos, tmp_path: Path
) -> None:
    (photos.root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (photos.root / "notes.txt").write_text("not an image: folders yield image files only")
    out = tmp_path / "out.csv"
    ran = convzoo("classify", photos.root, "--url", server.url, "--output", out, "--top-k", "3")
    assert ran.returncode == 1, ran.stderr  # one file failed
    # The progress bar's last state and the summary, on stderr.
    assert "13/13" in ran.stderr and "12 ok" in ran.stderr and "1 failed" in ran.stderr, ran.stderr
    assert "broken.png: 400" in ran.stderr
    got = {Path(r["path"]): r for r in rows(out)}
    assert set(got) == {*photos.paths, photos.root / "sub" / "broken.png"}
    broken = got.pop(photos.root / "sub" / "broken.png")
    assert broken["status"] == "error" and broken["http_status"] == "400" and "decod" in broken["error"]
    assert all(r["status"] == "ok" and r["http_status"] == "200" for r in got.values())
    # Each row is the service's own answer for that file.
    for path in photos.paths[:3]:
        direct = httpx.post(
            server.url + "/classify",
            params={"top_k": 3},
            content=path.read_bytes(),
            headers={"Content-Type": "image/png"},
        ).json()
        top = direct["results"][0]["predictions"]
        row = got[path]
        assert (row["model"], row["version"]) == (direct["model"], direct["version"])
        assert row["label"] == top[0]["label"] and abs(float(row["score"]) - top[0]["score"]) < 1e-6
        assert len(row["predictions"].split("; ")) == 3


def test_globs_and_files_to_json_lines(server: Server, photos: Photos, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    single = photos.root / "sub" / "item-002.png"
    ran = convzoo("classify", f"{photos.root}/*.png", single, "-u", server.url, "-o", out, "-c", "3")
    assert ran.returncode == 0, ran.stderr
    records = lines(out)
    expected = [p for p in photos.paths if p.parent == photos.root] + [single]
    assert [Path(str(r["path"])) for r in records] != [] and {Path(str(r["path"])) for r in records} == set(
        expected
    )
    assert len(records) == len(expected)
    for r in records:
        assert r["status"] == "ok" and r["attempts"] == 1 and r["error"] is None
        predictions = r["predictions"]
        assert isinstance(predictions, list) and len(predictions) == 5
        assert r["label"] == predictions[0]["label"]


def test_json_lines_to_stdout_without_an_output(server: Server, photos: Photos) -> None:
    ran = convzoo("classify", photos.paths[0], "-u", server.url)
    assert ran.returncode == 0, ran.stderr
    (record,) = [json.loads(line) for line in ran.stdout.splitlines()]
    assert record["path"] == str(photos.paths[0]) and record["status"] == "ok"


def test_a_rerun_skips_the_files_already_in_the_output(
    server: Server, photos: Photos, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    first = convzoo("classify", *photos.paths[:5], "-u", server.url, "-o", out)
    assert first.returncode == 0, first.stderr
    earlier = out.read_text().splitlines()
    # A record of a 503 that ran out of retries is no result: the rerun tries that file again.
    busy = {
        "path": str(photos.paths[5]),
        "status": "error",
        "http_status": 503,
        "model": None,
        "version": None,
        "label": None,
        "score": None,
        "predictions": [],
        "unusual": None,
        "error": "busy",
        "attempts": 6,
    }
    with out.open("a") as f:
        f.write(json.dumps(busy) + "\n")
    before = settled_classified(server)
    second = convzoo("classify", photos.root, "-u", server.url, "-o", out)
    assert second.returncode == 0, second.stderr
    assert "5 of 12 files already in" in second.stderr and "7/7" in second.stderr, second.stderr
    # The service saw the 7 files left, and only them.
    assert settled_classified(server, before + 7) == before + 7
    text = out.read_text().splitlines()
    assert text[:5] == earlier  # the earlier records kept as they were
    records = [json.loads(line) for line in text]
    assert sorted(Path(r["path"]) for r in records) == photos.paths  # one record per file
    assert all(r["status"] == "ok" for r in records)


def test_resume_from_a_csv_output(server: Server, photos: Photos, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert convzoo("classify", *photos.paths[:4], "-u", server.url, "-o", out).returncode == 0
    ran = convzoo("classify", *photos.paths, "-u", server.url, "-o", out)
    assert ran.returncode == 0 and "4 of 12 files already in" in ran.stderr, ran.stderr
    assert sorted(Path(r["path"]) for r in rows(out)) == photos.paths
    # --fresh starts over.
    again = convzoo("classify", photos.paths[0], "-u", server.url, "-o", out, "--fresh")
    assert again.returncode == 0 and [Path(r["path"]) for r in rows(out)] == [photos.paths[0]]


def test_an_output_that_is_not_ours_is_left_alone(server: Server, photos: Photos, tmp_path: Path) -> None:
    out = tmp_path / "thesis.csv"
    out.write_text("chapter,pages\n1,30\n")
    ran = convzoo("classify", photos.root, "-u", server.url, "-o", out)
    assert ran.returncode == 2 and "--fresh" in ran.stderr
    assert out.read_text() == "chapter,pages\n1,30\n"


def test_a_missing_input_is_a_usage_error(server: Server, tmp_path: Path) -> None:
    ran = convzoo("classify", tmp_path / "nowhere", "-u", server.url)
    assert ran.returncode == 2 and "no such file or folder" in ran.stderr


def test_models_prints_the_comparison_table(server: Server, source_zoo: object) -> None:
    ran = convzoo("models", "--url", server.url)
    assert ran.returncode == 0, ran.stderr
    listing = httpx.get(server.url + "/models").json()
    assert f"default: {listing['default']}" in ran.stdout
    for heading in ("top-1", "GFLOPs", "latency", "status"):
        assert heading in ran.stdout
    for model in listing["models"]:
        assert model["name"] in ran.stdout
    loaded = next(m for m in listing["models"] if m["name"] == listing["default"])
    assert f"{100 * loaded['top1']:.1f}%" in ran.stdout

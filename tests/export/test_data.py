"""Fashion-MNIST loading: the IDX format, the training-set normalisation, and the missing-data error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from export.cli import app
from export.fashion.data import DataMissingError, load_split, normalisation, to_input


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_reads_idx_files_plain_or_gzipped(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28) % 256
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([9, 0, 4]))
    split = load_split("test", tmp_path)
    assert len(split) == 3
    np.testing.assert_array_equal(split.images, images.astype(np.uint8))
    assert split.labels.tolist() == [9, 0, 4] and split.labels.dtype == np.int64


def test_the_real_test_split_and_its_input_tensor(fashion_dir: Path) -> None:
    test = load_split("test", fashion_dir)
    assert test.images.shape == (10_000, 28, 28) and np.bincount(test.labels).tolist() == [1000] * 10
    x = to_input(test.images[:4], 0.286, 0.353)
    assert x.shape == (4, 1, 28, 28) and x.dtype == np.float32
    assert normalisation(load_split("train", fashion_dir)) == (0.286, 0.353)


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as info:
        load_split("train", tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data DIR" in message


def test_the_build_command_reports_missing_data_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["build", "--zoo", "fashion", "--models", "fmnist-lenet5", "--data", str(tmp_path),
         "--out", str(tmp_path / "models"), "--registry", str(tmp_path / "registry.yaml")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "apt-get install dataset-fashion-mnist" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "registry.yaml").exists()


def test_make_data_and_the_other_installers_wait_for_the_package_managers_lock() -> None:
    from tests.paths import REPO

    for script in ("ensure-data.sh", "ensure-browser.sh", "ensure-promtool.sh"):
        text = (REPO / "scripts" / script).read_text()
        calls = [line for line in text.splitlines() if "$sudo apt-get" in line]
        assert calls, script
        assert all('"${wait_for_lock[@]}"' in line for line in calls), script
        assert "wait_for_lock=(-o DPkg::Lock::Timeout=600)" in text, script

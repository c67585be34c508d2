"""Reading MNIST (rnnmnist.training.data): IDX files, the splits, the batch stream, and --data-dir mistakes named."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import pytest
import torch
from clitools import invoke

from rnnmnist.errors import BadValueError, DataError
from rnnmnist.training.data import BatchStream, load_mnist, load_split, read_idx, read_pair, scale
from rnnmnist.training.synthetic import TEST_FILES, TRAIN_FILES, idx_bytes, make_tiny_mnist, tiny_train_args, write_idx


def test_the_loaded_splits_keep_uint8_images_and_int64_labels(tiny_data: Path) -> None:
    data = load_mnist(tiny_data, val_size=100, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (500, 100, 200)
    assert data.train.images.dtype == torch.uint8
    assert data.train.images.shape == (500, 28, 28)
    assert data.train.labels.dtype == torch.int64


def test_validation_is_the_first_training_images(tiny_data: Path) -> None:
    full = read_pair(*(tiny_data / "MNIST" / "raw" / name for name in TRAIN_FILES))
    data = load_mnist(tiny_data, val_size=100, download=False)
    assert torch.equal(data.val.images, full.images[:100])
    assert torch.equal(data.train.images, full.images[100:])
    assert torch.equal(load_split(tiny_data, "val", 100, download=False).labels, full.labels[:100])


def test_scale_maps_pixels_to_the_unit_range() -> None:
    x = scale(torch.tensor([[0, 255, 51]], dtype=torch.uint8))
    assert x.dtype == torch.float32
    assert torch.allclose(x, torch.tensor([[0.0, 1.0, 0.2]]))


def test_gzipped_idx_files_are_read(tmp_path: Path, tiny_data: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in TRAIN_FILES + TEST_FILES:
        with (tiny_data / "MNIST" / "raw" / name).open("rb") as src, gzip.open(raw / (name + ".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    assert len(load_split(tmp_path, "test", 0, download=False)) == 200


def test_missing_files_offline_names_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path, val_size=10, download=False)
    message = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in TRAIN_FILES + TEST_FILES:
        assert name in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "wrong magic number"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + bytes(5), "wrong magic number"),  # a labels file
        (b"\x00\x00\x0d\x03" + struct.pack(">3I", 1, 28, 28) + bytes(784), "wrong magic number"),  # float type
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 28, 28) + bytes(784), "truncated"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
    ],
)
def test_a_bad_image_file_is_refused_naming_the_file_and_the_problem(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "images"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        read_idx(path, 3)
    assert str(path) in str(e.value)


def test_idx_files_with_no_images_are_refused_by_train(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    empty = torch.zeros(0, 28, 28, dtype=torch.uint8)
    for images, labels in (TRAIN_FILES, TEST_FILES):
        (raw / images).write_bytes(idx_bytes(empty))
        (raw / labels).write_bytes(idx_bytes(torch.zeros(0, dtype=torch.uint8)))
    result = invoke(*tiny_train_args(tmp_path, tmp_path / "run"))
    assert result.exit_code == 1 and "holds no images" in result.output


def test_a_count_mismatch_a_label_out_of_range_or_a_wrong_size_is_refused(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "i", torch.zeros(3, 28, 28, dtype=torch.uint8))
    labels = write_idx(tmp_path / "l", torch.tensor([1, 2], dtype=torch.uint8))
    with pytest.raises(DataError, match=r"3 images but .* 2 labels"):
        read_pair(images, labels)
    labels.write_bytes(idx_bytes(torch.tensor([1, 2, 10], dtype=torch.uint8)))
    with pytest.raises(DataError, match="label 10 is outside 0-9"):
        read_pair(images, labels)
    images.write_bytes(idx_bytes(torch.zeros(3, 28, 27, dtype=torch.uint8)))
    with pytest.raises(DataError, match="28x27, expected 28x28"):
        read_pair(images, labels)


def test_a_val_size_that_leaves_no_training_images_is_refused(tiny_data: Path) -> None:
    with pytest.raises(BadValueError, match="val_size=600 leaves no training images"):
        load_mnist(tiny_data, val_size=600, download=False)


def test_a_batch_larger_than_what_val_size_leaves_names_the_flags(tiny_data: Path, tmp_path: Path) -> None:
    n = len(load_mnist(tiny_data, val_size=0, download=False).train)
    args = tiny_train_args(tiny_data, tmp_path / "run", "--val-size", str(n - 10), "--batch-size", "64")
    result = invoke(*args, "--outlier-share", "0.125")
    assert result.exit_code == 2, result.output  # a flag value out of range, known once the data is
    line = result.stderr.strip()
    assert "batch_size=64 (56 digits beside 8 generated non-digits)" in line and "(10 images)" in line
    assert "--batch-size" in line and "--val-size" in line and len(line.splitlines()) == 1
    assert invoke(*tiny_train_args(tiny_data, tmp_path / "r2", "--val-size", str(n))).exit_code == 2
    assert not (tmp_path / "run").exists() and not (tmp_path / "r2").exists()


def test_batch_stream_covers_each_epoch_once() -> None:
    stream = BatchStream(n=10, batch_size=3, seed=0, device=torch.device("cpu"))
    epoch = torch.cat([stream.next() for _ in range(3)])  # 9 of 10; the incomplete last batch is skipped
    assert len(set(epoch.tolist())) == 9
    assert stream.epoch == 0
    stream.next()
    assert stream.epoch == 1


def test_batch_stream_is_seeded_and_resumable() -> None:
    a = BatchStream(n=50, batch_size=8, seed=3, device=torch.device("cpu"))
    b = BatchStream(n=50, batch_size=8, seed=3, device=torch.device("cpu"))
    for _ in range(9):
        assert torch.equal(a.next(), b.next())
    state = a.state_dict()
    expected = [a.next() for _ in range(10)]
    c = BatchStream(n=50, batch_size=8, seed=99, device=torch.device("cpu"))
    c.load_state_dict(state)
    assert all(torch.equal(x, c.next()) for x in expected)


def test_a_batch_larger_than_the_training_split_is_refused() -> None:
    with pytest.raises(DataError, match="larger than the training split"):
        BatchStream(n=10, batch_size=11, seed=0, device=torch.device("cpu"))


def test_the_tiny_synthetic_mnist_loads_as_mnist(tmp_path: Path) -> None:
    root = make_tiny_mnist(tmp_path, n_train=30, n_test=10)
    assert len(load_split(root, "test", 0, download=False)) == 10


# --- --data-dir: the likeliest mistake named, and a failed download leaves nothing behind


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else ["(none)"]


@pytest.mark.parametrize("made", ["nothing", "the folder", "MNIST/", "MNIST/raw/ with a file"])
def test_a_failed_download_leaves_the_data_folder_as_it_was(
    tmp_path: Path, made: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request goes to a closed local port: the download fails at once, with or without a network.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    data = tmp_path / "data"
    if made != "nothing":
        data.mkdir()
    if made.startswith("MNIST/"):
        (data / "MNIST").mkdir()
    if made.endswith("with a file"):
        (data / "MNIST" / "raw").mkdir()
        (data / "MNIST" / "raw" / "notes.txt").write_text("mine")
    before = _listing(data)
    with pytest.raises(DataError, match="download failed"):
        load_mnist(data, val_size=100, download=True)
    assert _listing(data) == before


def test_the_mnist_folder_itself_is_named_with_its_parent(tiny_data: Path) -> None:
    with pytest.raises(DataError, match=f"is the MNIST folder itself: use its parent: --data-dir {tiny_data}$"):
        load_mnist(tiny_data / "MNIST", val_size=100, download=True)
    with pytest.raises(DataError, match=f"is the MNIST/raw folder itself: use --data-dir {tiny_data}$"):
        load_split(tiny_data / "MNIST" / "raw", "test", 0, download=False)


def test_files_directly_in_the_data_folder_are_named(tiny_data: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    shutil.copytree(tiny_data / "MNIST" / "raw", flat)
    with pytest.raises(DataError, match=f"move them into {flat / 'MNIST' / 'raw'}"):
        load_mnist(flat, val_size=100, download=True)
    assert sorted(p.name for p in flat.iterdir()) == sorted(TRAIN_FILES + TEST_FILES)  # nothing downloaded

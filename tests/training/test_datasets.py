"""The MNIST family (--dataset): each data set's folder, files and formats, class names, stored in checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rnnmnist import config
from rnnmnist.cli.main import cli
from rnnmnist.errors import DataError
from rnnmnist.training import checkpoint
from rnnmnist.training.data import load_mnist, load_split
from rnnmnist.training.datasets import SPECS, class_names
from rnnmnist.training.synthetic import make_tiny_dataset, synthetic_digits, tiny_train_args

FOLDERS = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "kmnist": "KMNIST",
    "emnist-digits": "EMNIST",
    "qmnist": "QMNIST",
}


def test_every_config_dataset_has_a_spec() -> None:
    assert set(config.DATASETS) == set(SPECS) == set(FOLDERS)
    assert all(len(class_names(name)) == 10 for name in SPECS)
    assert class_names("fashion-mnist")[0] == "T-shirt/top"


@pytest.mark.parametrize("dataset", sorted(FOLDERS))
def test_reads_each_dataset_in_its_torchvision_layout(dataset: str, tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path, dataset, n_train=60, n_test=20)
    assert (root / FOLDERS[dataset] / "raw").is_dir()
    data = load_mnist(root, 10, download=False, dataset=dataset)
    images, labels = synthetic_digits(60, 2)
    # Upright as written (EMNIST's transposed files are turned back), labels from the first column (QMNIST).
    assert torch.equal(data.val.images, images[:10])
    assert torch.equal(data.train.labels, labels[10:])
    assert torch.equal(data.test.labels, synthetic_digits(20, 3)[1])
    # No other data set's folder is read: MNIST is not there.
    if dataset != "mnist":
        with pytest.raises(DataError, match=r"MNIST not found in .*MNIST/raw"):
            load_split(root, "test", 0, download=False)


@pytest.mark.parametrize("dataset", ["fashion-mnist", "emnist-digits", "qmnist"])
def test_missing_files_name_the_folder_and_files(dataset: str, tmp_path: Path) -> None:
    s = SPECS[dataset]
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "test", 0, download=False, dataset=dataset)
    message = str(e.value)
    assert "\n" not in message
    assert f"{s.title} not found in {tmp_path / s.folder / 'raw'}" in message
    assert "--no-download" in message
    assert all(name in message for name in s.all_files)


def test_qmnist_labels_file_is_checked(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path, "qmnist", n_train=30, n_test=10)
    labels = root / "QMNIST" / "raw" / "qmnist-test-labels-idx2-int"
    labels.write_bytes(labels.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_split(root, "test", 0, download=False, dataset="qmnist")
    # An MNIST-style labels file in QMNIST's place is named as the wrong kind.
    labels.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(10))
    with pytest.raises(DataError, match=r"wrong magic number 00000801.*QMNIST labels"):
        load_split(root, "test", 0, download=False, dataset="qmnist")


def test_an_old_checkpoint_without_a_dataset_means_mnist() -> None:
    stored = {k: v for k, v in config.Config(hidden_size=8).to_dict().items() if k != "dataset"}
    cfg, notes = config.from_stored(stored)
    assert cfg.dataset == "mnist" and notes == []


def test_train_eval_predict_on_fashion_mnist_use_its_class_names(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", "fashion-mnist", n_train=300, n_test=50)
    out = tmp_path / "run"
    runner = CliRunner()
    args = tiny_train_args(data, out, "--dataset", "fashion-mnist", "--iters", "101", "--no-download", "--json")
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert checkpoint.load(out / "checkpoint.pt").config.dataset == "fashion-mnist"
    # eval finds the data set in the checkpoint: Fashion-MNIST's files, its class names.
    result = runner.invoke(cli, ["eval", str(out / "checkpoint.pt"), "--data-dir", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.splitlines()[0])
    assert report["dataset"] == "fashion-mnist" and report["n"] == 50
    assert report["class_names"][9] == "Ankle boot"
    result = runner.invoke(cli, ["eval", str(out / "checkpoint.pt"), "--data-dir", str(data)])
    assert "Ankle boot" in result.output and "Fashion-MNIST test" in result.output
    result = runner.invoke(
        cli, ["predict", str(out / "checkpoint.pt"), "--data-dir", str(data), "--index", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[0])
    names = class_names("fashion-mnist")
    assert record["class_name"] == names[record["prediction"]]
    assert record["label_name"] == names[int(synthetic_digits(50, 3)[1][3])]


def test_a_checkpoint_of_an_unknown_dataset_is_refused_not_read_as_mnist() -> None:
    stored = {**config.Config(hidden_size=8).to_dict(), "dataset": "emnist-letters"}
    with pytest.raises(config.ConfigError, match="dataset must be one of mnist, fashion-mnist"):
        config.from_stored(stored)

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from clitools import device_node

from rnnmnist.config import Config
from rnnmnist.errors import CheckpointError
from rnnmnist.training import checkpoint
from rnnmnist.training.model import SequenceClassifier

CFG = Config(hidden_size=8)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "ok.pt"
    checkpoint.save(path, CFG, SequenceClassifier(CFG), {"test_accuracy": 0.5})
    return path


def _payload(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _rewrite(path: Path, payload: dict) -> Path:
    torch.save(payload, path)
    return path


def test_round_trip_rebuilds_from_config_alone(saved: Path) -> None:
    model, ckpt = checkpoint.load_model(saved)
    assert ckpt.config == CFG
    assert ckpt.metrics == {"test_accuracy": 0.5}
    images = torch.rand(2, 28, 28)
    state = _payload(saved)["model"]
    reference = SequenceClassifier(CFG).eval()
    reference.load_state_dict(state)
    assert torch.equal(model(images), reference(images))


def test_holds_only_plain_types(saved: Path) -> None:
    payload = _payload(saved)  # would raise if anything needed more than weights_only
    assert payload["format"] == checkpoint.FORMAT
    assert payload["format_version"] == checkpoint.FORMAT_VERSION
    assert isinstance(payload["config"], dict)


def test_atomic_save_leaves_no_temporary_files(saved: Path) -> None:
    checkpoint.save(saved, CFG, SequenceClassifier(CFG), {})
    assert [p.name for p in saved.parent.iterdir()] == ["ok.pt"]


def test_written_files_get_ordinary_permissions(saved: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")  # what open() gives under this umask
    assert saved.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "model": Exploit()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*posix\.system.*nothing was executed"):
        checkpoint.load(path)
    assert not marker.exists()
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError):
        checkpoint.load(plain)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(format_version=99), "format 99, newer than"),
        (lambda p: p.update(format_version="1"), "unknown checkpoint format version"),
        (lambda p: p.pop("config"), "missing config"),
        (lambda p: p.pop("format"), "no rnnmnist format marker"),
        (lambda p: p["config"].update(hidden_size=9), "weights do not fit the stored config"),
        (lambda p: p["config"].update(hidden_size=-1), "model settings are unusable: hidden_size must be"),
        (lambda p: p["config"].update(cell="lstmish"), "cell must be one of"),
        (lambda p: p.update(model=[1, 2]), "not a state dict"),
        (lambda p: p["model"]["head.weight"].fill_(float("nan")), "head.weight holds NaN"),
        (lambda p: p["model"].update({"head.bias": p["model"]["head.bias"].long()}), "int64, not floating"),
        (lambda p: p["model"].update({"head.bias": p["model"]["head.bias"].cfloat()}), "complex64, not floating"),
    ],
)
def test_damaged_checkpoints(saved: Path, change, message: str) -> None:
    payload = _payload(saved)
    change(payload)
    _rewrite(saved, payload)
    with pytest.raises(CheckpointError, match=message) as e:
        checkpoint.load_model(saved)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cut", [0, 10, 1000, -10])
def test_truncated_file(saved: Path, cut: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="not an rnnmnist checkpoint"):
        checkpoint.load(saved)


def test_random_binary(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(
        torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy().tobytes()
    )
    with pytest.raises(CheckpointError, match="not an rnnmnist checkpoint"):
        checkpoint.load(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path)


def test_training_settings_of_another_version_do_not_block_the_weights(saved: Path) -> None:
    payload = _payload(saved)
    payload["config"].update(lr=-1.0, wings=2)  # a damaged value, a key from a newer rnnmnist
    _rewrite(saved, payload)
    _, ckpt = checkpoint.load_model(saved)
    assert ckpt.config.model == CFG.model
    assert len(ckpt.notes) == 2 and "wings" in " ".join(ckpt.notes)


def test_oversized_files_are_refused_unread(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "MAX_BYTES", 1000)
    with pytest.raises(CheckpointError, match="over the"):
        checkpoint.load(saved)
    with pytest.raises(CheckpointError, match="over the"):  # a device is read only up to the limit
        checkpoint.load(device_node(tmp_path, "zero"))

"""What a run promises (issue 13), each case through the CLI on generated data: bad images never crash and are
listed, resume refuses changed data, a received run folder is data (it runs no code, fetches nothing and writes
nowhere else), --out never overwrites a user's files, a kill loses minutes, and every expected failure is a
message with an exit code, never a traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_spec, write_image
from typer.testing import CliRunner

from imgcls.cli import app
from imgcls.data.demo import ensure_demo, make_odd_images
from imgcls.train.checkpoint import read_checkpoint, write_checkpoint

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    """Exit code and everything printed; an exception that escaped the CLI fails the test (a traceback)."""
    result = runner.invoke(app, list(args))
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not escaped, f"a traceback reached the user: {result.exception!r}"
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in output
    return result.exit_code, output


def _spec_file(tmp_path: Path, raw: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _demo_copy(tmp_path: Path) -> Path:
    """A private copy of the tiny demo folder (train/valid x 5 classes), safe to change."""
    return Path(shutil.copytree(ensure_demo("folder", scale=0.05), tmp_path / "data"))


@pytest.fixture
def broken_folder(tmp_path: Path) -> Path:
    """train/valid x circle/square with readable images, plus a truncated and an empty JPEG in train."""
    root = tmp_path / "broken"
    odd = make_odd_images(tmp_path / "odd")
    for split, count in (("train", 8), ("valid", 3)):
        for label in ("circle", "square"):
            for number in range(count):
                write_image(root / split / label / f"{number}.jpg", (48, 40), (40 + 20 * number, 90, 160))
    shutil.copy(odd["truncated"], root / "train" / "circle" / "truncated.jpg")
    shutil.copy(odd["empty"], root / "train" / "square" / "empty.jpg")
    return root


def _squish(root: Path, **data: Any) -> dict[str, Any]:
    raw = tiny_spec(str(root))
    raw["data"].update(item_tfm={"kind": "resize", "size": 40, "method": "squish"}, **data)
    raw["train"]["stages"] = [{"schedule": "fit_one_cycle", "epochs": 1, "lr_max": 3e-3}]
    return raw


# --- 1-3: bad images -------------------------------------------------------------------------------------------


def test_skip_works_in_resident_mode_and_says_what_it_left_out(tmp_path: Path, broken_folder: Path) -> None:
    config = _spec_file(tmp_path, _squish(broken_folder, on_bad_image="skip"))  # squish: auto picks resident
    code, output = cli("train", str(config), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, output
    assert "data mode: resident" in output
    assert "left out 2 unreadable image(s)" in output and "truncated.jpg" in output and "empty.jpg" in output
    assert "(16 train / 6 valid items" in output  # the counts after skipping (18 files in train)
    with open(tmp_path / "run" / "skipped.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["path"] for r in rows) == ["train/circle/truncated.jpg", "train/square/empty.jpg"]
    assert all(r["split"] == "train" and r["reason"] for r in rows)
    code, output = cli("lr-find", str(config), "--num-it", "8", "--out", str(tmp_path / "lr"), "--quiet")
    assert code == 0, output


def test_a_stop_on_bad_images_names_them_and_the_command_that_goes_on(tmp_path: Path, broken_folder: Path) -> None:
    raw = _squish(broken_folder, mode="stream", bs=16)  # one training batch: both bad files in it
    config = _spec_file(tmp_path, raw)
    run = tmp_path / "run"
    code, output = cli("train", str(config), "--out", str(run), "--quiet")
    assert code == 3
    assert "cannot read 2 image(s)" in output and "truncated.jpg" in output and "empty.jpg" in output
    command = f"imgcls train --resume {run} --set data.on_bad_image=skip"
    assert command in " ".join(output.split())
    code, output = cli(*command.split()[1:], "--quiet")  # the command the hint gives works
    assert code == 0, output
    assert (run / "skipped.csv").is_file()


# --- 4: resume and evaluation compare the data with the run's manifest ------------------------------------------


@pytest.fixture
def demo_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(data folder copy, spec file, finished run folder) on the tiny demo data."""
    root = _demo_copy(tmp_path)
    config = _spec_file(tmp_path, tiny_spec(str(root)))
    run = tmp_path / "run"
    code, output = cli("train", str(config), "--out", str(run), "--quiet")
    assert code == 0, output
    return root, config, run


def test_resume_refuses_a_renamed_class_folder(demo_run: tuple[Path, Path, Path]) -> None:
    root, _, run = demo_run
    for split in ("train", "valid"):
        (root / split / "ring").rename(root / split / "annulus")
    code, output = cli("train", "--resume", str(run), "--quiet")
    assert code == 3
    assert "classes removed: ring; added: annulus (renamed?)" in output and "--allow-data-change" in output
    code, output = cli("tta-eval", str(run), "-n", "1", "--quiet")  # evaluation compares the files alone
    assert code == 3 and "item(s) removed" in output
    code, output = cli("train", "--resume", str(run), "--quiet", "--allow-data-change")
    assert code == 0, output


def test_added_images_and_classes_are_named_and_never_redraw_the_split(
    demo_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, _, run = demo_run
    for number in range(3):
        write_image(root / "valid" / "circle" / f"new_{number}.jpg", (60, 50))
    write_image(root / "train" / "hexagon" / "0.jpg", (60, 50))
    write_image(root / "valid" / "hexagon" / "0.jpg", (60, 50))
    code, output = cli("train", "--resume", str(run), "--quiet")
    assert code == 3 and "classes removed: -; added: hexagon" in output and "5 item(s) added" in output
    code, output = cli("interpret", str(run), "--quiet", "--k", "2")
    assert code == 3 and "5 item(s) added" in output
    code, output = cli("interpret", str(run), "--quiet", "--k", "2", "--allow-data-change")
    assert code == 0, output
    assert "(15 items)" in output  # the recorded validation items only, not the 4 new ones


def test_an_edited_manifest_is_refused(demo_run: tuple[Path, Path, Path]) -> None:
    _, _, run = demo_run
    manifest = run / "items.csv"
    manifest.write_text(manifest.read_text().replace(",valid,", ",train,", 1))
    code, output = cli("tta-eval", str(run), "-n", "1", "--quiet")
    assert code == 3 and "does not match the fingerprint" in output


# --- 5: a received run folder is data ---------------------------------------------------------------------------


def _rewrite_record(run: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """What someone could send: the run's checkpoints with a spec changed by hand."""
    for name in ("best", "last"):
        path = run / "checkpoints" / f"{name}.safetensors"
        checkpoint = read_checkpoint(path)
        spec = json.loads(json.dumps(checkpoint.record.spec))
        change(spec)
        record = checkpoint.record.model_copy(update={"spec": spec})
        model = _StateHolder(checkpoint.model_state)
        write_checkpoint(path, model, record, with_rng=False)  # type: ignore[arg-type]


class _StateHolder:
    """Stands in for a model when re-writing a checkpoint: write_checkpoint only reads its state_dict."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return self.state


def test_evaluating_a_received_run_runs_none_of_its_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    labeller = tmp_path / "evil.py"
    labeller.write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "def label(path):\n    return path.parent.name\n"
    )
    raw = tiny_spec(str(_demo_copy(tmp_path)))
    raw["data"]["labels"] = {"kind": "callable", "function": f"{labeller}:label"}
    config = _spec_file(tmp_path, raw)
    run = tmp_path / "run"
    assert cli("train", str(config), "--out", str(run), "--quiet")[0] == 0
    assert marker.is_file()  # training runs the spec's labeller: the user gave that spec
    marker.unlink()
    assert cli("tta-eval", str(run), "-n", "1", "--quiet")[0] == 0
    assert cli("interpret", str(run), "--quiet", "--k", "2")[0] == 0
    assert cli("predict", str(run), str(tmp_path / "data" / "valid"), "--out", str(tmp_path / "p.csv"), "-q")[0] == 0
    assert not marker.exists()
    assert cli("interpret", str(run), "--quiet", "--k", "2", "--trust-spec")[0] == 0
    assert marker.is_file()  # --trust-spec is the explicit way to run it


def test_a_received_run_never_downloads_or_writes_elsewhere(demo_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, run = demo_run
    elsewhere = tmp_path / "elsewhere"
    archive = tmp_path / "payload.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"payload"
        info = tarfile.TarInfo("payload/marker.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    def point_elsewhere(spec: dict[str, Any]) -> None:
        spec["data"]["path"] = str(elsewhere / "dataset")
        spec["data"]["url"] = archive.as_uri()
        spec["data"]["cache_dir"] = str(elsewhere / "cache")
        spec["data"]["mode"] = "cache"

    _rewrite_record(run, point_elsewhere)
    code, output = cli("tta-eval", str(run), "-n", "1", "--quiet")
    assert code == 3 and "does not exist" in output
    assert not elsewhere.exists()  # nothing downloaded, unpacked or cached there


def test_predict_from_an_export_never_builds_a_pretrained_model(demo_run: tuple[Path, Path, Path]) -> None:
    root, _, run = demo_run
    export = run / "export"
    assert cli("export", str(run), "--no-onnx", "--quiet")[0] == 0
    config = json.loads((export / "preprocess.json").read_text())
    config["model"]["pretrained"] = True  # not a key an export holds
    (export / "preprocess.json").write_text(json.dumps(config))
    code, output = cli("predict", str(export), str(root / "valid"), "--out", str(run / "p.csv"), "--quiet")
    assert code == 4 and "malformed" in output
    del config["model"]["pretrained"]
    config["model"]["arch"] = "resnet18"  # a hub architecture: rebuilt without its weights, never downloaded
    (export / "preprocess.json").write_text(json.dumps(config))
    code, output = cli("predict", str(export), str(root / "valid"), "--out", str(run / "p.csv"), "--quiet")
    assert code == 1 and "cannot load" in output and "hub" not in output.lower()


def test_an_archive_that_escapes_its_folder_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"escaped"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = tiny_spec(str(tmp_path / "downloads" / "dataset"))
    raw["data"]["url"] = archive.as_uri()
    code, output = cli("train", str(_spec_file(tmp_path, raw)), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 3 and "outside the dataset folder" in output
    assert not (tmp_path / "downloads" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_a_truncated_archive_is_a_message(tmp_path: Path) -> None:
    archive = tmp_path / "cut.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = os.urandom(200_000)
        info = tarfile.TarInfo("dataset/big.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(archive.read_bytes()[:50_000])
    raw = tiny_spec(str(tmp_path / "downloads" / "dataset"))
    raw["data"]["url"] = archive.as_uri()
    code, output = cli("train", str(_spec_file(tmp_path, raw)), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 3 and "damaged or truncated archive" in output and "Aborted" not in output


# --- 6-7: run folders -------------------------------------------------------------------------------------------


def test_out_never_overwrites_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "spec.yaml").write_text("my own notes\n")
    config = _spec_file(tmp_path, tiny_spec("demo:folder@0.02"))
    code, output = cli("train", str(config), "--out", str(mine), "--quiet")
    assert code == 4 and "not an imgcls run folder" in output
    assert (mine / "spec.yaml").read_text() == "my own notes\n" and sorted(os.listdir(mine)) == ["spec.yaml"]


def test_a_run_killed_before_its_first_checkpoint_resumes_or_restarts(tmp_path: Path) -> None:
    config = _spec_file(tmp_path, tiny_spec("demo:folder@0.02"))
    run = tmp_path / "run"
    assert cli("train", str(config), "--out", str(run), "--quiet")[0] == 0
    (run / "checkpoints" / "last.safetensors").rename(run / "checkpoints" / ".last.safetensors.tmp")  # torn write
    (run / "checkpoints" / "best.safetensors").unlink()
    code, output = cli("train", "--resume", str(run), "--quiet")
    assert code == 0 and "starting it again" in output
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert not (run / "checkpoints" / ".last.safetensors.tmp").exists()
    (run / "checkpoints" / "last.safetensors").unlink()
    assert cli("train", str(config), "--out", str(run), "--quiet")[0] == 0  # or start it again into the folder


def test_mid_epoch_checkpoints_lose_minutes_and_resume_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imgcls.spec.load import spec_from_dict
    from imgcls.train.callbacks.logging import SaveLast
    from imgcls.train.folders import resume_run
    from imgcls.train.run import train

    raw = tiny_spec("demo:folder@0.05")
    raw["runtime"]["checkpoint_every"] = 1e-9  # minutes: a checkpoint after every batch
    plain = train(spec_from_dict(raw), tmp_path / "plain", quiet=True)
    original = SaveLast.on_batch_end

    def killed(self: SaveLast, state: Any) -> None:
        original(self, state)
        if (state.position.epoch, state.position.batch) == (1, 3):
            raise SystemExit("killed")  # no chance to save anything more

    monkeypatch.setattr(SaveLast, "on_batch_end", killed)
    with pytest.raises(SystemExit):
        train(spec_from_dict(raw), tmp_path / "run", quiet=True)
    monkeypatch.setattr(SaveLast, "on_batch_end", original)
    position = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors").record.position
    assert (position.epoch, position.batch) == (1, 3)  # three batches into the epoch, not its start
    spec, checkpoint = resume_run(tmp_path / "run", None)
    train(spec, tmp_path / "run", quiet=True, resume=checkpoint)

    def rows(run: Path) -> list[dict[str, str]]:
        with open(run / "metrics.csv", newline="") as handle:
            return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]

    assert rows(tmp_path / "run") == rows(plain)


# --- 8-9: messages, never tracebacks ----------------------------------------------------------------------------


def test_an_unwritable_output_folder_is_a_message(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    config = _spec_file(tmp_path, tiny_spec("demo:folder@0.02"))
    code, output = cli("train", str(config), "--out", str(tmp_path / "a-file" / "run"), "--quiet")
    assert code in (4, 6) and "a-file" in output


def test_a_full_disk_while_checkpointing_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import imgcls.train.checkpoint as checkpoint_module

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "checkpoints"))

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    config = _spec_file(tmp_path, tiny_spec("demo:folder@0.02"))
    code, output = cli("train", str(config), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 6 and "No space left on device" in output and "df -h" in output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"data: {path: \xff\xfe}\ntrain: {stages: [{schedule: fit}]}\n", "not UTF-8"),
        (b"data: &d\n  path: x\n  again: *d\ntrain: {stages: [{schedule: fit}]}\n", "refers to itself"),
        (b"data: {path: x, item_tfm: {kind: resize, size: 99999999}}\ntrain: {stages: [{schedule: fit}]}\n", "8192"),
        (b"data: {path: ''}\ntrain: {stages: [{schedule: fit}]}\n", "at least 1 character"),
        (b"name: /etc/run\ndata: {path: x}\ntrain: {stages: [{schedule: fit}]}\n", "plain folder name"),
        (b"data: {path: x}\ntrain: {stages: [{schedule: fit, epochs: 1.0e+23}]}\n", "train.stages.0.epochs"),
    ],
)
def test_bad_specs_are_messages(tmp_path: Path, text: bytes, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(text)
    code, output = cli("train", str(config))
    assert code == 2 and expected in output


def test_a_hand_edited_checkpoint_header_is_a_message(demo_run: tuple[Path, Path, Path]) -> None:
    _, _, run = demo_run
    path = run / "checkpoints" / "best.safetensors"
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + size].replace(b'\\"kind\\": \\"best\\"', b'\\"kind\\": \\"bust\\"')  # same length
    path.write_bytes(raw[:8] + header + raw[8 + size :])
    code, output = cli("tta-eval", str(run), "-n", "1", "--quiet")
    assert code == 4 and "malformed" in output
    code, output = cli("tta-eval", str(run), "-n", "1", "--quiet", "--checkpoint", "last")
    assert code == 0, output


def test_hints_that_are_right(demo_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, config, run = demo_run
    (run / "checkpoints" / "best.safetensors").unlink()
    code, output = cli("interpret", str(run), "--quiet")
    assert code == 4 and "--checkpoint last" in output
    code, output = cli("train", str(config), "--resume", str(run))
    assert code == 2 and "would be ignored" in output
    raw = tiny_spec("demo:folder@0.02")
    raw["train"]["stages"] = [{"schedule": "fit", "epochs": 1, "lr": 1.0e30}]
    raw["train"]["optimizer"] = "sgd"  # plain SGD at 1e30 overflows the weights: a NaN loss in the first epoch
    code, output = cli("train", str(_spec_file(tmp_path, raw, "nan.yaml")), "--out", str(tmp_path / "nan"), "-q")
    assert code == 4 and "became nan" in output
    # the way out for fp16 is only offered to fp16 runs (this one is fp32 or bf16, by the CPU)
    assert "no checkpoint was written before it" in output and "fp16 overflows first" not in output

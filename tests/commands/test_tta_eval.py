"""tta-eval and interpret of a run read its batches in the run's data mode (here the presize cache)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import tiny_spec
from trained_runs import run_cli

from imgcls.data.demo import ensure_demo
from imgcls.spec.load import spec_from_dict
from imgcls.train.run import train


def test_tta_eval_of_a_cache_run_reads_the_cache(tmp_path: Path) -> None:
    root = Path(shutil.copytree(ensure_demo("folder", scale=0.02), tmp_path / "data"))
    raw = tiny_spec(str(root))
    squish = {"kind": "resize", "size": 40, "method": "squish"}  # no random window: one cache entry per item
    raw["data"].update(mode="cache", cache_dir=str(tmp_path / "cache"), item_tfm=squish)
    run = train(spec_from_dict(raw), tmp_path / "run", quiet=True)
    assert list((tmp_path / "cache").rglob("*.u8"))
    # Every validation image overwritten with zeros of the same length and modification time: decoding fails,
    # and the cache (keyed by path, size and mtime) still serves the presized pixels.
    valid = sorted((root / "valid").rglob("*.jpg"))
    assert valid
    for path in valid:
        stat = path.stat()
        path.write_bytes(b"\0" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert run_cli("tta-eval", str(run), "-n", "1", "--quiet") == 0
    assert run_cli("interpret", str(run), "--quiet", "--k", "2") == 0
    (tmp_path / "cache").rename(tmp_path / "gone")  # without the cache the same command meets the broken files
    assert run_cli("tta-eval", str(run), "-n", "1", "--quiet") != 0

"""Resolving `data.path`: a local folder, a generated demo, or a dataset archive downloaded from `data.url`."""

from __future__ import annotations

import http.client
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from imgcls.data.demo import ensure_demo
from imgcls.errors import DataError
from imgcls.spec.data import DataSpec

_CHUNK = 1 << 20  # 1 MiB


def download(url: str, destination: Path, quiet: bool = False) -> Path:
    """Fetch `url` to `destination` through a temporary file, so an interrupted download leaves nothing behind."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=".download-", delete=False) as scratch:
        partial = Path(scratch.name)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - user-given dataset URL
                total = int(response.headers.get("Content-Length") or 0) or None
                columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
                with Progress(*columns, disable=quiet, transient=True) as progress:
                    task = progress.add_task("download", total=total)
                    while chunk := response.read(_CHUNK):
                        scratch.write(chunk)
                        progress.advance(task, len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            partial.unlink(missing_ok=True)
            raise DataError(
                f"cannot download {url}: {err}",
                hint="check the network, or download the archive yourself and point data.path at the extracted folder",
            ) from None
    partial.replace(destination)
    return destination


def _extract(archive: Path, into: Path, url: str) -> None:
    """Unpack a tar or zip archive. tar's "data" filter refuses members that would land outside `into` (`..`,
    absolute paths, links out); zipfile drops such path parts itself."""
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(into)
        else:
            raise DataError(f"{url} is neither a tar nor a zip archive", hint="check data.url")
    except tarfile.FilterError as err:
        raise DataError(
            f"{url} holds a member that would be written outside the dataset folder: {err}",
            hint="the archive is unsafe; nothing of it was kept",
        ) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise DataError(
            f"{url} is a damaged or truncated archive: {err or type(err).__name__}",
            hint="download it again (delete it if it was cached), or unpack it yourself and set data.path",
        ) from None


def fetch_dataset(url: str, target: Path, quiet: bool = False) -> Path:
    """Download and unpack `url` so that `target` is the dataset folder (fastai's untar_data).

    An archive holding a single top-level folder (oxford-iiit-pet.tgz -> oxford-iiit-pet/) becomes `target`
    itself; anything else is unpacked into `target`.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        archive = download(url, scratch / "archive", quiet)
        unpacked = scratch / "unpacked"
        _extract(archive, unpacked, url)
        entries = list(unpacked.iterdir())
        source = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
        source.replace(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def resolve_root(spec: DataSpec, quiet: bool = False, fetch: bool = True) -> Path:
    """The folder items are found in. Relative paths are relative to the working directory. Without `fetch`
    nothing is downloaded or generated (a run folder being evaluated names its data; it never fetches it)."""
    if spec.path.startswith("demo:"):
        # demo:<layout> or demo:<layout>@<scale> (a smaller version, for tests and smoke runs)
        layout, _, scale = spec.path.removeprefix("demo:").partition("@")
        return ensure_demo(layout, scale=float(scale) if scale else 1.0, generate=fetch)
    root = Path(spec.path).expanduser()
    if not root.exists() and spec.url is not None and fetch:
        return fetch_dataset(spec.url, root, quiet)
    if not root.exists():
        raise DataError(
            f"data.path {root} does not exist",
            hint="fix data.path, set data.url to download the dataset there, or use demo:folder to try the tool",
        )
    return root

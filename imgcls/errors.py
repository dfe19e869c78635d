"""Errors a user can act on. The CLI prints them without a traceback."""

from __future__ import annotations


class ImgclsError(Exception):
    """Base class: `message` says what went wrong, `hint` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class SpecError(ImgclsError):
    """The experiment spec (YAML file or --set override) is invalid."""

    exit_code = 2


class DataError(ImgclsError):
    """Items, labels, splits or images cannot be turned into batches."""

    exit_code = 3


class ImageReadError(DataError):
    """One image file cannot be decoded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"cannot read image {path}: {reason}",
            hint="re-download or delete the file, or set data.on_bad_image: skip to leave such files out",
        )
        self.path = path
        self.reason = reason


class UnreadableImagesError(DataError):
    """Image files that cannot be decoded, found in a batch while data.on_bad_image is `error`."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        listed = "; ".join(f"{path}: {reason}" for path, reason in failures)
        super().__init__(
            f"cannot read {len(failures)} image(s): {listed}",
            hint="delete or replace them, or set data.on_bad_image: skip to leave unreadable files out",
        )
        self.failures = failures


class TrainingError(ImgclsError):
    """Training cannot go on (NaN loss, class-count mismatch, missing checkpoint...)."""

    exit_code = 4


class TrainingInterrupted(ImgclsError):  # noqa: N818 - an outcome the user asked for, not an error
    """The user pressed Ctrl-C; a checkpoint was saved."""

    exit_code = 130


class TrainingStopped(ImgclsError):  # noqa: N818 - an outcome asked for, not an error
    """A callback ended the run before its last epoch on purpose (e.g. a pruned tuning trial)."""

    exit_code = 0


class OutputError(ImgclsError):
    """A file or folder cannot be read or written (permissions, a full disk, a path that is a file)."""

    exit_code = 6


class ResourceError(ImgclsError):
    """The machine ran out of memory."""

    exit_code = 7


def as_user_error(err: BaseException) -> ImgclsError | None:
    """An expected failure that is not an ImgclsError, as one (None for anything else: a bug shows its traceback).

    OSError: reading or writing a file failed; MemoryError: a spec asked for more memory than there is."""
    if isinstance(err, OSError):
        where = f" {err.filename}" if err.filename else ""
        reason = err.strerror or str(err) or type(err).__name__
        return OutputError(
            f"cannot read or write{where}: {reason}",
            hint="check the path, its permissions and the free space (df -h); checkpoints already written are intact",
        )
    if isinstance(err, MemoryError):
        return ResourceError(
            "out of memory",
            hint="lower data.bs, the item or batch size (data.item_tfm.size, augment.size), or use data.mode: stream",
        )
    return None

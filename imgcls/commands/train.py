"""`imgcls train`: a new run from a spec file, or `--resume RUN` from its last checkpoint."""

from __future__ import annotations

from pathlib import Path

from imgcls.errors import SpecError
from imgcls.spec import load_spec
from imgcls.train.folders import resume_run
from imgcls.train.run import train


def run_train(
    config: Path | None, overrides: list[str] | None, out: Path | None, resume: Path | None, quiet: bool
) -> Path:
    """Train the spec into `out` (default runs/<name>), or continue the run in `resume`."""
    if resume is not None:
        spec, checkpoint = resume_run(resume, overrides)
        return train(spec, resume, quiet=quiet, resume=checkpoint)
    if config is None:
        raise SpecError("give a spec file, or --resume RUN", hint="imgcls train configs/demo.yaml")
    return train(load_spec(config, overrides), out, quiet=quiet)

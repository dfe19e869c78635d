"""`imgcls train`: a new run from a spec file, or `--resume RUN` from its last checkpoint."""

from __future__ import annotations

from pathlib import Path

from imgcls.errors import SpecError
from imgcls.report.console import Console
from imgcls.spec import load_spec
from imgcls.train.folders import resume_run
from imgcls.train.run import train


def run_train(
    config: Path | None,
    overrides: list[str] | None,
    out: Path | None,
    resume: Path | None,
    quiet: bool,
    allow_data_change: bool = False,
) -> Path:
    """Train the spec into `out` (default runs/<name>), or continue the run in `resume`."""
    if resume is not None:
        if config is not None or out is not None:
            given = f"the spec {config}" if config is not None else f"--out {out}"
            raise SpecError(
                f"--resume {resume} continues that run with its own spec and folder; {given} would be ignored",
                hint=f"imgcls train --resume {resume}   (or start a new run: imgcls train SPEC --out NEW)",
            )
        spec, checkpoint = resume_run(resume, overrides)
        if checkpoint is None:
            Console(quiet).warn(f"{resume} has no checkpoint yet (it stopped during its first): starting it again")
        return train(spec, resume, quiet=quiet, resume=checkpoint, allow_data_change=allow_data_change)
    if config is None:
        raise SpecError("give a spec file, or --resume RUN", hint="imgcls train configs/demo.yaml")
    return train(load_spec(config, overrides), out, quiet=quiet)

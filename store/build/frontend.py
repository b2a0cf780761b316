"""Building one wheel from a project directory with pypa/build, for the target interpreter.

``build.ProjectBuilder`` calls the project's PEP 517 hooks inside an isolated environment.
pypa/build's own ``DefaultIsolatedEnv`` always makes that environment from the interpreter
running the frontend; a wheel is for the environment's interpreter (issue 12: "the target
is the venv's interpreter"), so :class:`TargetEnv` is the same idea made from the target
interpreter: a fresh venv of it without pip, the build requirements installed into it by
pip (``pip --python``, pip >= 22.3) or, without pip, by ``uv pip install --python``, from
the indexes and find-links the lock uses. Everything the backend and the installer print
goes to one log file.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from build import BuildBackendException, BuildException, ProjectBuilder
from build.env import IsolatedEnv

from pkgfs.store.errors import BuildError

__all__ = ["TargetEnv", "build_wheel", "installer_environ"]


def installer_environ(
    index_urls: Sequence[str], find_links: Sequence[str], no_index: bool
) -> dict[str, str]:
    """pip's and uv's environment variables for the lock's package sources: the first
    index, the others as extra indexes, the find-links; none given keeps their defaults."""
    environ: dict[str, str] = {}
    if index_urls:
        environ["PIP_INDEX_URL"] = environ["UV_INDEX_URL"] = index_urls[0]
        if len(index_urls) > 1:
            environ["PIP_EXTRA_INDEX_URL"] = environ["UV_EXTRA_INDEX_URL"] = " ".join(
                index_urls[1:]
            )
    if find_links:
        environ["PIP_FIND_LINKS"] = environ["UV_FIND_LINKS"] = " ".join(find_links)
    if no_index:
        environ["PIP_NO_INDEX"] = environ["UV_NO_INDEX"] = "1"
    return environ


class TargetEnv(IsolatedEnv):
    """A throwaway venv of ``python`` at ``path`` (build.env.IsolatedEnv's protocol)."""

    def __init__(
        self, python: Path, path: Path, installer_env: Mapping[str, str], log: TextIO
    ) -> None:
        self._python = python
        self._path = path
        self._installer_env = dict(installer_env)
        self._log = log
        self._run([str(python), "-m", "venv", "--without-pip", str(path)])

    @property
    def python_executable(self) -> str:
        return str(self._path / "bin" / "python")

    def make_extra_environ(self) -> dict[str, str]:
        # As DefaultIsolatedEnv: the venv's scripts first on PATH, and an empty PYTHONPATH.
        return {
            "PATH": os.pathsep.join([str(self._path / "bin"), os.environ.get("PATH", "")]),
            "PYTHONPATH": "",
        }

    def install(self, requirements: Collection[str]) -> None:
        """Install PEP 508 ``requirements`` into the venv; nothing for none."""
        if not requirements:
            return
        listed = self._path.parent / "build-requirements.txt"
        listed.write_text("\n".join(sorted(requirements)) + "\n", encoding="utf-8")
        if importlib.util.find_spec("pip") is not None:
            command = [sys.executable, "-m", "pip", "--python", self.python_executable]
            command += ["install", "--no-input", "--no-warn-script-location", "--no-compile"]
            command += ["--disable-pip-version-check", "-r", str(listed)]
        elif (uv := shutil.which("uv")) is not None:
            command = [uv, "pip", "install", "--python", self.python_executable, "-r", str(listed)]
        else:
            raise BuildError("installing build requirements needs pip or uv, and neither is here")
        self._run(command, self._installer_env)

    def _run(self, command: list[str], extra: Mapping[str, str] | None = None) -> None:
        self._log.write(f"$ {' '.join(command)}\n")
        self._log.flush()
        subprocess.run(
            command,
            env={**os.environ, **(extra or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            check=True,
        )


def build_wheel(
    project: Path,
    python: Path,
    work: Path,
    installer_env: Mapping[str, str],
    log_path: Path,
) -> Path:
    """Build ``project`` into a wheel for ``python``, in ``work``; the wheel's path.

    The build's output is written to ``log_path``. Raises :class:`BuildError` (one line,
    without the output) when the environment cannot be made, a requirement cannot be
    installed, or the backend fails.
    """
    out = work / "wheel"
    out.mkdir()
    with open(log_path, "a", encoding="utf-8") as log:

        def runner(
            cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
        ) -> None:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            subprocess.run(
                cmd,
                cwd=cwd,
                env={**os.environ, **(extra_environ or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )

        try:
            env = TargetEnv(python, work / "env", installer_env, log)
            builder = ProjectBuilder.from_isolated_env(env, project, runner=runner)
            env.install(builder.build_system_requires)
            env.install(builder.get_requires_for_build("wheel"))
            return Path(builder.build("wheel", out))
        except BuildBackendException as exc:
            reason = f"the build backend failed ({type(exc.exception).__name__})"
        except BuildException as exc:
            reason = str(exc)
        except subprocess.CalledProcessError as exc:
            reason = f"{Path(str(exc.cmd[0])).name} exited with status {exc.returncode}"
        except OSError as exc:
            reason = exc.strerror or str(exc)
    raise BuildError(reason)

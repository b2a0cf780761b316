"""A real Docker engine for tests: Debian's dockerd started on a private socket and data root,
stopped after, and the images of docker/ built from this checkout.

The engine runs with the options this kind of machine needs (``DOCKERD_FLAGS``): no
iptables and no bridge (the containers run with ``--network none``; the host's network is
left alone), overlay2 picked by dockerd on the ext4 root, cgroupfs on cgroup v1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DOCKERD_FLAGS",
    "REPO",
    "Engine",
    "EngineUnavailable",
    "engine",
    "ensure_tools",
    "fuse_device",
    "mounts_under",
]

REPO = Path(__file__).resolve().parents[1]
DOCKERD_FLAGS = ("--iptables=false", "--ip6tables=false", "--bridge=none")
TOOLS = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}


class EngineUnavailable(Exception):
    """dockerd cannot run on this machine; the message says why (its log's last lines)."""


def ensure_tools() -> None:
    """Install Debian's docker.io, docker-compose and debootstrap when missing (as root).
    Raises ``EngineUnavailable`` when they cannot be installed."""
    need = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if not need:
        return
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
    ):
        done = subprocess.run(command, capture_output=True, text=True, env=environ, check=False)
        if done.returncode != 0:
            raise EngineUnavailable(f"apt-get could not install {' '.join(need)}: {done.stderr}")


@dataclass
class Engine:
    """A running dockerd; ``docker`` and ``compose`` talk to it and to nothing else."""

    root: Path
    env: dict[str, str]

    def docker(
        self, *args: str | Path, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self._run(["docker", *map(str, args)], check, timeout)

    def compose(
        self, *args: str | Path, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self._run(["docker-compose", *map(str, args)], check, timeout)

    def script(self, *args: str | Path, timeout: float = 900) -> str:
        """A script of docker/ (base.sh, build.sh), against this engine: its stdout."""
        return self._run(list(map(str, args)), True, timeout).stdout.strip()

    def _run(
        self, argv: list[str], check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr}{done.stdout}")
        return done

    def inspect(self, container: str, template: str) -> str:
        return self.docker("inspect", "-f", template, container).stdout.strip()

    def wait_healthy(self, container: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.inspect(container, "{{.State.Health.Status}}") != "healthy":
            if time.monotonic() > deadline:
                logs = self.docker("logs", container, check=False)
                raise AssertionError(f"{container} never healthy: {logs.stderr}{logs.stdout}")
            time.sleep(0.2)

    def wait_for_log(self, container: str, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            logs = self.docker("logs", container, check=False)
            if text in logs.stdout:
                return logs.stdout
            if time.monotonic() > deadline or self.inspect(container, "{{.State.Running}}") != (
                "true"
            ):
                raise AssertionError(f"{container}: no {text!r} in {logs.stdout}{logs.stderr}")
            time.sleep(0.1)


@contextlib.contextmanager
def engine(root: Path, startup: float = 60) -> Iterator[Engine]:
    """dockerd with its data, state and socket below ``root``; stopped, with every
    container it ran, when the block ends. Raises ``EngineUnavailable`` with the reason
    when it does not come up."""
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    log = root / "dockerd.log"
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0"}
    env.pop("DOCKER_CONTEXT", None)
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [
                "dockerd",
                "--data-root", str(root / "data"),
                "--exec-root", str(root / "exec"),
                "--pidfile", str(root / "dockerd.pid"),
                "-H", f"unix://{sock}",
                *DOCKERD_FLAGS,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    docker = Engine(root, env)
    try:
        deadline = time.monotonic() + startup
        while docker.docker("version", check=False, timeout=30).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise EngineUnavailable("dockerd did not start: " + " | ".join(tail))
            time.sleep(0.2)
        yield docker
    finally:
        with contextlib.suppress(Exception):
            ids = docker.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                docker.docker("rm", "-f", *ids, check=False)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        shutil.rmtree(root / "data", ignore_errors=True)  # images and layers: hundreds of MB


def fuse_device(directory: Path) -> str:
    """``/dev/fuse`` when every user may open it (mode 0666, as Debian ships it), else a
    node of the same device, mode 0666, in ``directory``: ``--device`` copies a node's mode
    into the container, and its user (uid 1000) must open it. The host's node is left as it
    is."""
    mode = os.stat("/dev/fuse").st_mode
    if mode & 0o666 == 0o666:
        return "/dev/fuse"
    node = directory / "fuse"
    if not node.exists():
        os.mknod(node, 0o666 | stat.S_IFCHR, os.stat("/dev/fuse").st_rdev)
        os.chmod(node, 0o666)  # noqa: S103 (past the umask: that is the point)
    return str(node)


def mounts_under(directory: Path) -> list[str]:
    """The mountpoints at or below ``directory`` in this process's mount table."""
    prefix = os.path.realpath(directory)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found

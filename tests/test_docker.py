"""docker/ with a real engine: dockerd from Debian, a Debian 12 base made with debootstrap,
the image built from this checkout (pkgfs and a lock, not its packages), and the three
patterns of docker/README.md: FUSE in the container with a shared store, a sidecar serving
app containers that have no FUSE (with Compose), and host-managed mounts; and, where
/dev/fuse is absent, ``pkgfs materialize``.

Needs root (dockerd), and the first run needs Debian's mirror and the package index (apt-get,
debootstrap, the wheels of pkgfs's dependencies); later runs reuse .cache/docker/. A few
minutes from a clean checkout, a minute after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PKGFS
from tests.dockerkit import (
    REPO,
    Engine,
    EngineUnavailable,
    engine,
    ensure_tools,
    fuse_device,
    mounts_under,
)
from tests.mountkit import PY, digest_tree, environ_for, make_project, needs_fuse

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="dockerd needs root"),
]

APP_UID = 1000  # the image's user
IMPORTS = "import app, ns.a, ns.b; print('imported', app.VALUE, ns.a.A, ns.b.B, app.__file__)"
MAIN = f"{IMPORTS}\n"
WAITING = f"import time\n{IMPORTS}\nimport sys; sys.stdout.flush(); time.sleep(600)\n"


@dataclass
class Setup:
    docker: Engine
    image: str  # pkgfs and the lock
    base: str  # python3 and fuse3 only
    app: Path  # what the image holds in /app: the lock and main.py
    store: Path  # prepared: holds the lock's wheels and their bytecode
    fuse: str  # a FUSE device node uid 1000 may open
    tmp: Path

    def store_volume(self) -> str:
        return f"{self.store}:/store:ro"

    def hardened(self) -> list[str]:
        """A container as the patterns run it: the image's user, a read-only root with a
        tmpfs for the state, no network."""
        return [
            "--read-only",
            "--tmpfs", f"/state:exec,uid={APP_UID},gid={APP_UID}",
            "--network", "none",
        ]  # fmt: skip

    def with_fuse(self) -> list[str]:
        return ["--device", f"{self.fuse}:/dev/fuse", "--cap-add", "SYS_ADMIN"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("docker")
    try:
        ensure_tools()
        with engine(tmp / "engine") as docker:
            yield _build(docker, tmp)
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine can run here: {exc}")


def _build(docker: Engine, tmp: Path) -> Setup:
    project = make_project(tmp / "project", environ_for(tmp))
    app = tmp / "app"
    app.mkdir()
    shutil.copy(project.project / "pylock.toml", app)
    (app / "main.py").write_text(MAIN)
    (app / "waiting.py").write_text(WAITING)
    base = docker.script(REPO / "docker" / "base.sh")
    image = docker.script(REPO / "docker" / "build.sh", app, "pkgfs-test-app")
    # Prepared where it is writable, once, by the image's own pkgfs (so the bytecode is
    # for the image's python), from the lock's wheels, offline.
    store = tmp / "store"
    store.mkdir()
    docker.docker(
        "run", "--rm", "--user", "0", "--network", "none",
        "-v", f"{store}:/store", "-v", f"{project.project / 'wheels'}:/app/wheels:ro",
        "--entrypoint", "pkgfs", image, "sync", "--offline",
    )  # fmt: skip
    setup = Setup(docker, image, base, app, store, fuse_device(tmp), tmp)
    # The store is given read-only (``:ro``) from here on, owned by root, not by the
    # containers' user: a container mounts from it and writes nothing into it.
    done = setup.docker.docker(
        "run", "--rm", *setup.hardened(), *setup.with_fuse(), "-v", setup.store_volume(),
        setup.image, "true", check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"a read-only store does not serve: {done.stderr}"
    return setup


def test_two_containers_of_one_lock_share_one_store(setup: Setup) -> None:
    """Pattern 1: FUSE in each container, one store for both, unchanged by them; the
    healthcheck says healthy; docker stop is clean (the forwarded SIGTERM ends the app,
    not docker's SIGKILL)."""
    docker = setup.docker
    before = digest_tree(setup.store)
    names = ["pkgfs-test-one", "pkgfs-test-two"]
    for name in names:
        docker.docker(
            "run", "-d", "--name", name, *setup.hardened(), *setup.with_fuse(),
            "-v", setup.store_volume(), setup.image, "python", "waiting.py",
        )  # fmt: skip
    for name in names:
        out = docker.wait_for_log(name, "imported")
        assert "imported 1 a b /state/venv/lib/python3.11/site-packages/app/__init__.py" in out
    assert [docker.inspect(name, "{{.State.Running}}") for name in names] == ["true", "true"]
    docker.wait_healthy(names[0])
    status = docker.docker("exec", names[0], "pkgfs", "status").stdout
    assert status.startswith("ok ")
    assert "/state/venv/lib/python3.11/site-packages" in status
    docker.docker("stop", "-t", "2", *names)
    for name in names:
        # 143: pkgfs run passed SIGTERM on, the app died of it, pkgfs unmounted and exited
        # with its status; docker's SIGKILL after 2 s would be 137, a failed unmount 1.
        assert docker.inspect(name, "{{.State.ExitCode}}") == str(128 + signal.SIGTERM)
        logs = docker.docker("logs", name)
        assert "Traceback" not in logs.stderr
        assert "error" not in logs.stderr
    docker.docker("rm", *names)
    assert digest_tree(setup.store) == before


def test_a_container_runs_its_app_and_exits_with_its_status(setup: Setup) -> None:
    done = setup.docker.docker(
        "run", "--rm", *setup.hardened(), *setup.with_fuse(), "-v", setup.store_volume(),
        setup.image, "sh", "-c", "python main.py && exit 3", check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("imported 1 a b ")


def test_without_fuse_pkgfs_says_so_in_one_line(setup: Setup) -> None:
    done = setup.docker.docker(
        "run", "--rm", *setup.hardened(), "-v", setup.store_volume(), setup.image, check=False
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("pkgfs: error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(
        "pkgfs: error: /dev/fuse is missing: load the fuse module (modprobe fuse), or give the"
        " container --device /dev/fuse"
    )  # (and, once it exists, names pkgfs materialize)
    assert "Traceback" not in done.stderr


def test_materialize_in_a_container_without_fuse(setup: Setup) -> None:
    """Where FUSE is absent: ``pkgfs materialize VENV --lock FILE`` writes the environment
    as files, from the read-only store, which it leaves as it was."""
    before = digest_tree(setup.store)
    script = (
        "python3 -m venv --without-pip /state/venv"
        " && pkgfs materialize /state/venv --lock /app/pylock.toml --offline"
        " && /state/venv/bin/python main.py"
    )
    done = setup.docker.docker(
        "run", "--rm", *setup.hardened(), "-v", setup.store_volume(),
        "--entrypoint", "sh", setup.image, "-c", script, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "imported 1 a b /state/venv/lib/python3.11/site-packages/app/__init__.py" in done.stdout
    assert digest_tree(setup.store) == before


@pytest.fixture
def shared_dir(setup: Setup) -> Iterator[Path]:
    """A host directory that is a mount of its own with shared propagation (this machine's
    mounts are private), writable by the sidecar's user."""
    envs = setup.tmp / "envs"
    envs.mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", envs, envs], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", envs], check=True)
        os.chown(envs, APP_UID, APP_UID)
        yield envs
    finally:
        subprocess.run(["umount", "-R", "-l", envs], check=False)


def test_sidecar_serves_apps_without_fuse_and_recovers_when_killed(
    setup: Setup, shared_dir: Path
) -> None:
    """Pattern 2, with Compose: the app container has no /dev/fuse, no capability, no pkgfs
    (the base image) and another uid; the sidecar, killed, is restarted by its restart
    policy and serves again; ``down`` leaves no mount on the host."""
    docker = setup.docker
    files: list[str | Path] = ["-f", REPO / "docker" / "compose.yaml"]
    docker.env |= {
        "PKGFS_IMAGE": setup.image,
        "PKGFS_BASE": setup.base,
        "PKGFS_STORE_DIR": str(setup.store),
        "PKGFS_ENVS_DIR": str(shared_dir),
        "PKGFS_APP_DIR": str(setup.app),
        "PKGFS_FUSE": setup.fuse,
    }
    compose: list[str | Path] = ["-p", "pkgfstest", *files]
    site = shared_dir / "app" / "lib" / PY / "site-packages"
    before = digest_tree(setup.store)
    try:
        docker.compose(*compose, "up", "-d", "envs")
        sidecar = docker.compose(*compose, "ps", "-q", "envs").stdout.strip()
        docker.wait_healthy(sidecar)
        assert mounts_under(shared_dir) == [str(shared_dir), str(site)]  # seen on the host
        ran = docker.compose(*compose, "run", "--rm", "app")
        assert "imported 1 a b /envs/app/lib/python3.11/site-packages/app/" in ran.stdout

        os.kill(int(docker.inspect(sidecar, "{{.State.Pid}}")), signal.SIGKILL)  # a crash
        deadline = time.monotonic() + 60
        while docker.inspect(sidecar, "{{.RestartCount}}") == "0":
            assert time.monotonic() < deadline, "the sidecar was not restarted"
            time.sleep(0.2)
        docker.wait_healthy(sidecar)
        logs = docker.docker("logs", sidecar).stderr
        assert f"{site}: cleared a stale mount".replace(str(shared_dir), "/envs") in logs
        ran = docker.compose(*compose, "run", "--rm", "app")
        assert "imported 1 a b " in ran.stdout
        assert mounts_under(shared_dir) == [str(shared_dir), str(site)]  # the stale one gone
    finally:
        docker.compose(*compose, "down", "-t", "2", check=False)
    assert mounts_under(shared_dir) == [str(shared_dir)]
    assert digest_tree(setup.store) == before


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/python3"), reason="needs Debian's /usr/bin/python3"
)
def test_host_managed_mount_bound_into_a_container(setup: Setup) -> None:
    """Pattern 3: the host mounts (a venv of the interpreter the image has at the same
    path), containers bind the venv read-only and need nothing else."""
    host = setup.tmp / "host"
    env = environ_for(host)
    project = make_project(host / "project", env)
    venv = host / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
    site = venv / "lib" / PY / "site-packages"
    mount = [*PKGFS, "mount", "--allow-other", "--lock", str(project.project / "pylock.toml")]
    mount.append(str(site))
    subprocess.run(mount, env=env, check=True, capture_output=True)
    try:
        done = setup.docker.docker(
            "run", "--rm", "--user", "1234", "--read-only", "--network", "none",
            "-v", f"{venv}:/venv:ro", setup.base, "/venv/bin/python", "-c", IMPORTS,
        )  # fmt: skip
        assert done.stdout.startswith("imported 1 a b /venv/lib/python3.11/site-packages/")
    finally:
        subprocess.run([*PKGFS, "unmount", site], env=env, check=True, capture_output=True)

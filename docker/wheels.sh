#!/usr/bin/env bash
# Usage: docker/wheels.sh DIR
# Fills DIR with the wheels an image installs pkgfs from, built on this machine: pkgfs itself
# (from this checkout), pyfuse3 with the patches in .ci/pyfuse3/ (kept by .ci/setup in
# .venv/wheels/, or built once more in a throwaway venv), every other dependency of pkgfs, and
# pip (run from its wheel inside the build, so the image needs no pip of its own). All but
# pkgfs are cached in .cache/docker/wheels-<key>/, <key> a hash of pyproject.toml and the
# patches. The target is Debian 12's python3 (3.11): run this with a 3.11 (.venv's).
set -euo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=$repo/.venv/bin/python
key=$(cat "$repo/pyproject.toml" "$repo"/.ci/pyfuse3/*.patch | sha256sum | cut -c1-12)
cache=$repo/.cache/docker/wheels-$key
pip=("$python" -m pip --disable-pip-version-check -q)

if [[ ! -f $cache/.complete ]]; then
    rm -rf "$cache" && mkdir -p "$cache"
    version=$("$python" -c 'import importlib.metadata as m; print(m.version("pyfuse3"))')
    found=("$repo"/.venv/wheels/pyfuse3-"$version"-*.whl)
    if [[ ! -f ${found[0]} ]]; then
        echo "wheels: building pyfuse3 with the patches for the image (a minute or two)" >&2
        scratch=$repo/.cache/docker/pyfuse3-venv
        [[ -x $scratch/bin/python ]] || "$python" -m venv "$scratch"
        "$repo/.ci/pyfuse3/install" "$scratch/bin/python"
        found=("$scratch"/wheels/pyfuse3-*.whl)
        version=$(basename "${found[0]}" | cut -d- -f2)
    fi
    cp "${found[0]}" "$cache/"
    echo "pyfuse3==$version" >"$cache/constraints.txt"
    echo "wheels: downloading pkgfs's dependencies and pip as wheels" >&2
    "${pip[@]}" wheel -w "$cache" --find-links "$cache" -c "$cache/constraints.txt" "$repo"
    "${pip[@]}" download --only-binary :all: -d "$cache" pip
    rm -f "$cache"/pkgfs-*.whl "$cache/constraints.txt"  # pkgfs is built fresh each time
    touch "$cache/.complete"
fi
rm -f "$out"/*.whl
cp "$cache"/*.whl "$out/"
"${pip[@]}" wheel --no-deps -w "$out" "$repo"

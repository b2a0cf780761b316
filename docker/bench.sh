#!/usr/bin/env bash
# Usage: docker/bench.sh [N]   (as root, with DOCKER_HOST naming a running engine)
# Measures, for the web stack of bench/common.py locked by uv for Debian 12's python3:
#   - image size: pkgfs's image (pkgfs and the lock) against the same lock installed into
#     the image by uv (--compile-bytecode) and by pip (which compiles by default);
#   - time from `docker run` to the end of the app's imports, warm, the median of 5;
#   - N containers of the lock at once: disk (images, store, each container's layer) and
#     memory (each container's memory cgroup: anonymous memory and page cache).
# Prints Markdown. Downloads the stack's wheels once into .cache/docker/bench/.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=${1:-10}
work=$repo/.cache/docker/bench/web
py=$repo/.venv/bin/python
mkdir -p "$work/app"
imports=$("$py" -c "import sys; sys.path.insert(0, '$repo')
from bench.common import STACKS; print(', '.join(STACKS['web'].imports))")
if [[ ! -f $work/app/uv.lock ]]; then
    "$py" -c "import sys; sys.path.insert(0, '$repo')
from bench.common import STACKS; print(STACKS['web'].pyproject(), end='')" >"$work/app/pyproject.toml"
    (cd "$work/app" && "$repo/.venv/bin/uv" lock -q --python /usr/bin/python3)
fi
if [[ ! -f $work/requirements.txt ]]; then
    (cd "$work/app" && "$repo/.venv/bin/uv" export -q --format requirements-txt \
        --no-emit-project >"$work/requirements.txt")
    "$py" -m pip download -q --no-deps --only-binary :all: -r "$work/requirements.txt" \
        -d "$work/wheels"
fi
printf 'import time\nimport %s\nprint("imported", flush=True)\n' "$imports" >"$work/app/main.py"
printf 'import time\nimport %s\nprint("imported", flush=True)\ntime.sleep(3600)\n' \
    "$imports" >"$work/app/waiting.py"

base=$("$repo/docker/base.sh")
pkgfs_image=$("$repo/docker/build.sh" "$work/app" pkgfs-bench-web)
context=$(mktemp -d)
store=$(mktemp -d /var/tmp/pkgfs-bench-store.XXXXXX)
trap 'rm -rf "$context" "$store"' EXIT
cp -r "$work/wheels" "$context/wheels"
cp "$work/requirements.txt" "$work/app/main.py" "$work/app/waiting.py" "$context/"
cp "$repo/.venv/bin/uv" "$context/uv"
cp "$repo"/.cache/docker/wheels-*/pip-*.whl "$context/wheels/"
common='FROM ${BASE}
COPY --from=build /venv /venv
COPY main.py waiting.py /app/
WORKDIR /app
ENV PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["python", "main.py"]'
cat >"$context/Dockerfile.uv" <<EOT
ARG BASE
FROM \${BASE} AS build
COPY uv /usr/local/bin/uv
COPY wheels/ /wheels/
COPY requirements.txt /
RUN uv venv -q --python /usr/bin/python3 /venv && uv pip install -q --python /venv/bin/python \
    --no-index --find-links /wheels --compile-bytecode -r /requirements.txt
$common
EOT
cat >"$context/Dockerfile.pip" <<EOT
ARG BASE
FROM \${BASE} AS build
COPY wheels/ /wheels/
COPY requirements.txt /
RUN set -- /wheels/pip-*.whl && python3 -m venv --without-pip /venv \
 && /venv/bin/python "\$1/pip" install -q --no-cache-dir --disable-pip-version-check \
    --no-index --find-links /wheels -r /requirements.txt
$common
EOT
docker build -q --build-arg "BASE=$base" -f "$context/Dockerfile.uv" -t uv-bench-web "$context" >/dev/null
docker build -q --build-arg "BASE=$base" -f "$context/Dockerfile.pip" -t pip-bench-web "$context" >/dev/null

# The store, filled once where it is writable, by the image's pkgfs (bytecode for its python).
docker run --rm --user 0 --network none -v "$store:/store" -v "$work/wheels:/wheels:ro" \
    --entrypoint sh "$pkgfs_image" -c 'pkgfs store add /wheels/*.whl >/dev/null && pkgfs sync --offline' \
    >/dev/null 2>&1
fuse=/dev/fuse
if [[ $(stat -c %a /dev/fuse) != 666 ]]; then
    fuse=$context/fuse && mknod -m 0666 "$fuse" c 10 229
fi
store_mode=ro
if ! docker run --rm --read-only --tmpfs /state:exec,uid=1000,gid=1000 --network none \
    --device "$fuse:/dev/fuse" --cap-add SYS_ADMIN -v "$store:/store:ro" "$pkgfs_image" true \
    >/dev/null 2>&1; then
    store_mode=rw  # pkgfs cannot serve from a read-only store yet: writable, owned by uid 1000
    chown -R 1000:1000 "$store"
    docker run --rm --read-only --tmpfs /state:exec,uid=1000,gid=1000 --network none \
        --device "$fuse:/dev/fuse" --cap-add SYS_ADMIN -v "$store:/store" "$pkgfs_image" true \
        >/dev/null 2>&1
fi
hardened=(--read-only --tmpfs /state:exec,uid=1000,gid=1000 --tmpfs /tmp --network none)
declare -A run_flags=(
    [pkgfs]="${hardened[*]} --device $fuse:/dev/fuse --cap-add SYS_ADMIN -v $store:/store:$store_mode"
    [uv]="${hardened[*]} --user 1000"
    [pip]="${hardened[*]} --user 1000"
)
declare -A images=(  # the image and the interpreter its app runs with
    [pkgfs]="$pkgfs_image python" [uv]="uv-bench-web python" [pip]="pip-bench-web python")
# The sidecar: one mount in a shared-propagation directory, app containers of the base image.
envs=$(mktemp -d /var/tmp/pkgfs-bench-envs.XXXXXX)
chmod 0755 "$envs" && chown 1000:1000 "$envs"
mount --bind "$envs" "$envs" && mount --make-rshared "$envs"
trap 'docker rm -f pkgfs-bench-sidecar >/dev/null 2>&1; umount -R -l "$envs"; rm -rf "$context" "$store" "$envs"' EXIT
# shellcheck disable=SC2086
docker run -d --name pkgfs-bench-sidecar ${run_flags[pkgfs]} -e XDG_STATE_HOME=/envs/.state \
    --mount "type=bind,src=$envs,dst=/envs,bind-propagation=rshared" \
    --entrypoint pkgfs "$pkgfs_image" run --offline --allow-other --venv /envs/app >/dev/null
until [[ -x $envs/app/bin/uvicorn ]]; do sleep 0.2; done
run_flags[sidecar]="${hardened[*]} --user 1234 -w /app -v $work/app:/app:ro --mount type=bind,src=$envs,dst=/envs,readonly,bind-propagation=rslave"
images[sidecar]="$base /envs/app/bin/python"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

echo "### Image size, web stack ($(ls "$work/wheels" | grep -vc '^pip-') wheels), Debian 12 base of $(mib "$(docker image inspect -f '{{.Size}}' "$base")") MiB"
echo
echo "| image | size MiB | packages in the image |"
echo "|---|---:|---|"
for who in pkgfs uv pip; do
    size=$(docker image inspect -f '{{.Size}}' "${images[$who]%% *}")
    what="the venv, installed at build"
    [[ $who == pkgfs ]] && what="none: pkgfs and the lock; the store is $(mib $(($(du -sb "$store" | cut -f1)))) MiB, once per host"
    echo "| $who | $(mib "$size") | $what |"
done
echo
echo "### From \`docker run\` to the end of the app's imports (warm, median of 5)"
echo
echo "| image | seconds |"
echo "|---|---:|"
for who in pkgfs uv pip sidecar; do
    times=()
    for _ in 1 2 3 4 5 6; do
        start=$(date +%s%N)
        # shellcheck disable=SC2086
        docker run --rm ${run_flags[$who]} ${images[$who]} main.py >/dev/null 2>"$context/err" || {
            cat "$context/err" >&2
            exit 1
        }
        times+=($(( $(date +%s%N) - start )))
    done
    median=$(printf '%s\n' "${times[@]:1}" | sort -n | sed -n 3p)  # the first run warms
    echo "| $who | $(awk -v t="$median" 'BEGIN { printf "%.2f", t / 1e9 }') |"
done
echo
echo "### $n containers of the lock at once, each imported the stack and waits"
echo
echo "| image | image + store MiB | container layers MiB | tmpfs MiB | anon MiB | page cache MiB |"
echo "|---|---:|---:|---:|---:|---:|"
for who in pkgfs uv pip sidecar; do
    ids=()
    for i in $(seq "$n"); do
        # shellcheck disable=SC2086
        ids+=($(docker run -d ${run_flags[$who]} ${images[$who]} waiting.py))
    done
    for id in "${ids[@]}"; do
        until docker logs "$id" 2>/dev/null | grep -q imported; do sleep 0.2; done
    done
    # The sidecar's own memory and layer count with its apps'.
    [[ $who == sidecar ]] && ids+=($(docker inspect -f '{{.Id}}' pkgfs-bench-sidecar))
    rss=0 cache=0 layers=0 tmpfs=0
    for id in "${ids[@]}"; do
        stat=/sys/fs/cgroup/memory/docker/$id/memory.stat
        rss=$((rss + $(awk '$1 == "total_rss" { print $2 }' "$stat")))
        cache=$((cache + $(awk '$1 == "total_cache" { print $2 }' "$stat")))
        shmem=$(awk '$1 == "total_shmem" { print $2 }' "$stat")
        tmpfs=$((tmpfs + ${shmem:-0}))
        layers=$((layers + $(docker inspect -s -f '{{.SizeRw}}' "$id")))
    done
    size=$(docker image inspect -f '{{.Size}}' "${images[$who]%% *}")
    [[ $who == pkgfs || $who == sidecar ]] && size=$((size + $(du -sb "$store" | cut -f1)))
    if [[ $who == sidecar ]]; then  # and the sidecar itself, once
        size=$((size + $(docker image inspect -f '{{.Size}}' "$pkgfs_image")))
    fi
    echo "| $who | $(mib "$size") | $(mib "$layers") | $(mib "$tmpfs") | $(mib "$rss") | $(mib "$cache") |"
    [[ $who == sidecar ]] && unset 'ids[-1]'
    docker rm -f "${ids[@]}" >/dev/null
done
echo
echo "(store given $store_mode; $(nproc) CPUs; $(date -u '+%Y-%m-%d %H:%M UTC'))"

#!/usr/bin/env bash
# Usage: docker/build.sh APP_DIR TAG
# Builds the image TAG from docker/Dockerfile: the base image (docker/base.sh), pkgfs's wheels
# (docker/wheels.sh) and APP_DIR (the lock and the application's files) copied to /app.
set -euo pipefail
app=$(cd "$1" && pwd)
tag=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base=$("$here/base.sh")
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$context/"
"$here/wheels.sh" "$context/wheels"
cp -r "$app" "$context/app"
docker build -q --build-arg "BASE=$base" -t "$tag" "$context" >/dev/null
echo "$tag"

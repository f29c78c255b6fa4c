#!/usr/bin/env bash
# Build the tamga container image FROM scratch out of a `tamga` binary built on this host.
#
#   deploy/build-image.sh BINARY [TAG]        (TAG defaults to tamga:latest)
#
# No base image is pulled: the binary (debug sections stripped), the shared libraries
# `ldd` lists for it and the dynamic loader are copied into a temporary build context
# at the paths the binary expects, with deploy/Dockerfile, and `docker build` runs there.
# The image therefore needs the same C library as the host that built the binary,
# which it carries itself.
set -euo pipefail

usage() { echo "usage: deploy/build-image.sh BINARY [TAG]" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
bin=$1
tag=${2:-tamga:latest}
here=$(cd "$(dirname "$0")" && pwd)

[ -x "$bin" ] || { echo "error: $bin is not an executable (build it first: cargo build -p tamga-node)" >&2; exit 1; }
command -v ldd >/dev/null || { echo "error: ldd not found" >&2; exit 1; }

ctx=$(mktemp -d "${TMPDIR:-/tmp}/tamga-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$ctx/data"
chmod 1777 "$root/tmp"
chmod 0700 "$ctx/data"

# The binary, without its debug sections (a debug build is ~300 MB with them).
if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$bin" "$root/usr/local/bin/tamga"
else
  cp "$bin" "$root/usr/local/bin/tamga"
fi
chmod 0755 "$root/usr/local/bin/tamga"

# Its shared libraries and the loader, each at the path ldd resolved it to (symlinks
# followed: the image holds regular files). ldd prints `name => /path (addr)` for a
# library, `/path (addr)` for the loader, and no path for the vDSO.
ldd_out=$(ldd "$bin" 2>&1) || true
if grep -q "not found" <<<"$ldd_out"; then
  echo "error: ldd cannot resolve every library of $bin:" >&2
  echo "$ldd_out" >&2
  exit 1
fi
libs=()
while read -r path; do
  [ -n "$path" ] && libs+=("$path")
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
for lib in "${libs[@]}"; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# Names for the node's uid/gid, so that `docker exec … id`-like tools and logs show them.
printf 'root:x:0:0:root:/:/nonexistent\ntamga:x:10001:10001:tamga node:/var/lib/tamga:/nonexistent\n' >"$root/etc/passwd"
printf 'root:x:0:\ntamga:x:10001:\n' >"$root/etc/group"

cp "$here/Dockerfile" "$ctx/Dockerfile"

revision=$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)
echo "building $tag from $bin ($(du -h "$root/usr/local/bin/tamga" | cut -f1) stripped; libraries: ${libs[*]:-none})"
docker build --quiet --label "org.opencontainers.image.revision=$revision" -t "$tag" "$ctx"

# The image runs: the binary finds its loader and libraries.
docker run --rm --network none "$tag" --version
echo "built $tag"

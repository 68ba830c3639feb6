#!/bin/bash
# Build a test-guest kernel (bzImage) for pydamon's real-memory tests from Debian's linux-source
# package: x86_64 defconfig + the in-tree kvm_guest.config + damon.config (beside this script).
# The result boots with ../shared/testbed/run-in-vm.sh (-k BZIMAGE, or TB_KERNEL=BZIMAGE).
#
# usage: build-kernel.sh [-s SOURCE_PACKAGE] [WORKDIR] [OUTPUT]
#   SOURCE_PACKAGE  Debian package with the kernel source tarball (default: the newest
#                   linux-source-X.Y apt knows, e.g. linux-source-6.12)
#   WORKDIR         build directory (default /var/tmp/pydamon-kbuild; needs ~2.5 GB)
#   OUTPUT          where to put the image (default WORKDIR/bzImage)
# Takes ~11 minutes with make -j2 on 2 cores. Needs root for apt-get (or the build packages
# already installed: build-essential flex bison bc libelf-dev libssl-dev xz-utils).
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
PKG=
while getopts "s:h" o; do
  case $o in s) PKG=$OPTARG;; *) sed -n '2,13p' "$0" >&2; exit 2;; esac
done
shift $((OPTIND-1))
WORK=${1:-/var/tmp/pydamon-kbuild}; OUT=${2:-$WORK/bzImage}
if [ -z "$PKG" ]; then
  PKG=$(apt-cache search --names-only '^linux-source-[0-9.]+$' | awk '{print $1}' | sort -V | tail -1)
  [ -n "$PKG" ] || { echo "build-kernel.sh: no linux-source-X.Y package known to apt (apt-get update?)" >&2; exit 1; }
fi
VER=${PKG#linux-source-}
echo "build-kernel.sh: building from $PKG in $WORK"

NEED="build-essential flex bison bc libelf-dev libssl-dev xz-utils $PKG"
if [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $NEED
else
  for p in $NEED; do dpkg -s "$p" >/dev/null 2>&1 || { echo "build-kernel.sh: install $p (as root)" >&2; exit 1; }; done
fi

mkdir -p "$WORK"; cd "$WORK"
if [ ! -d "linux-$VER" ]; then
  tar xf "/usr/src/linux-source-$VER.tar.xz"
  mv "linux-source-$VER" "linux-$VER"
fi
cd "linux-$VER"
make -s defconfig
make -s kvm_guest.config
scripts/kconfig/merge_config.sh -m .config "$HERE/damon.config" >/dev/null
make -s olddefconfig
missing=0
for o in $(grep -o '^CONFIG_[A-Z0-9_]*=y' "$HERE/damon.config" | cut -d= -f1); do
  grep -q "^$o=y" .config || { echo "build-kernel.sh: $o is not set after olddefconfig" >&2; missing=1; }
done
[ $missing = 0 ] || exit 1
time make -j"$(nproc)" bzImage
mkdir -p "$(dirname "$OUT")"
cp arch/x86/boot/bzImage "$OUT"
echo "build-kernel.sh: built $OUT (boot it with run-in-vm.sh -k $OUT)"

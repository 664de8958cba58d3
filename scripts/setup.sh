#!/usr/bin/env bash
# Set up everything glacierfs needs on a fresh Debian machine, idempotently:
# FUSE 3 (libfuse3 for mfusepy, fusermount3 and mount.fuse), rsync, attr, and a virtualenv in
# .venv with glacierfs and its test extras installed in editable mode; as root, a link
# /usr/local/bin/glacierfs so fstab mounts (mount.fuse) find the command.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The fuse3 package brings the library too: libfuse3-3 (libfuse3.so.3, Debian 12) or libfuse3-4
# (libfuse3.so.4, Debian 13).
have_libfuse3() { ldconfig -p 2>/dev/null | grep 'libfuse3\.so\.' >/dev/null; }
command -v fusermount3 >/dev/null 2>&1 && have_libfuse3 || need_apt+=(fuse3)
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
# setfattr/getfattr: the restore tests (and users) drive restores through extended attributes.
command -v setfattr >/dev/null 2>&1 || need_apt+=(attr)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# mount(8) runs fstab helpers with a fixed PATH: put the command where it looks.
if [ "$(id -u)" -eq 0 ] && [ -d /usr/local/bin ]; then
    ln -sfn "$PWD/.venv/bin/glacierfs" /usr/local/bin/glacierfs
fi
echo "setup: ready (.venv/bin/glacierfs)" >&2

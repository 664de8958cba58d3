"""An fstab line (`fuse.glacierfs`) mounts through mount(8) -> mount.fuse -> `glacierfs`."""

from __future__ import annotations

import shutil
import subprocess

from glacierfs.cli import fstab_args
from glacierfs.mount import is_mounted, pid_file
from tests.mount.conftest import force_unmount, run_glacierfs
from tests.vault_helpers import archives_by_path


def test_fstab_line_mounts_on_local_service(tmp_path, serve_process):
    # mount(8) runs helpers with a fixed PATH; scripts/setup.sh links the command there.
    assert shutil.which("glacierfs", path="/usr/local/bin:/usr/bin:/bin"), \
        "glacierfs is not on the system PATH: run scripts/setup.sh as root"
    mountpoint = tmp_path / "photos"
    mountpoint.mkdir()
    local = tmp_path / "local"
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"photos {mountpoint} fuse.glacierfs _netdev,local={local},"
        f"cache_dir={tmp_path / 'cache'},part_size=1M,cache_size=8M,async_close 0 0\n"
    )
    try:
        subprocess.run(["mount", "-T", str(fstab), str(mountpoint)], check=True, timeout=60,
                       capture_output=True)
        assert is_mounted(mountpoint)
        (mountpoint / "note.txt").write_bytes(b"kept in a vault\n")
        assert (mountpoint / "note.txt").read_bytes() == b"kept in a vault\n"
        assert run_glacierfs("umount", str(mountpoint)).returncode == 0
        assert not is_mounted(mountpoint)
    finally:
        daemon = pid_file(mountpoint)
        force_unmount(mountpoint, int(daemon.read_text()) if daemon.exists() else None)
    # The embedded service stored the archive under the fstab's local= directory.
    serve = serve_process(data_dir=local)
    archives = archives_by_path(serve.client(), "photos")
    assert archives["note.txt"]["Size"] == len(b"kept in a vault\n")


def test_fstab_options_split_between_glacierfs_and_fuse():
    # mount.fuse passes one -o list: glacierfs's options and flags become command-line
    # options, mount(8)'s own are dropped, and the rest go to FUSE.
    assert fstab_args(["photos", "/mnt/photos", "-o",
                       "_netdev,cache_size=8M,async_close,allow_other,create_vault,ro"]) == [
        "mount", "photos", "/mnt/photos", "--cache-size", "8M", "--async-close",
        "--create-vault", "-o", "allow_other,ro"]

#!/usr/bin/env bash
# Set everything up and mount vault "photos" at ~/glacier (or $1), backed by the embedded local
# vault service storing in ~/.local/share/glacierfs/local-vault (or $2). Then cp into it;
# `glacierfs umount ~/glacier` waits for uploads and unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
MOUNTPOINT=${1:-$HOME/glacier}
DATA_DIR=${2:-$HOME/.local/share/glacierfs/local-vault}
mkdir -p "$MOUNTPOINT" "$DATA_DIR"
.venv/bin/glacierfs mount photos "$MOUNTPOINT" --local "$DATA_DIR"
cat <<MSG
Mounted vault "photos" at $MOUNTPOINT (local vault service, data in $DATA_DIR).
  cp -r ~/Pictures $MOUNTPOINT/        # copy files in
  ls -l $MOUNTPOINT                    # the catalog's view
  .venv/bin/glacierfs umount $MOUNTPOINT
AWS CLI against the same vault: export AWS_SHARED_CREDENTIALS_FILE=$DATA_DIR/credentials
  (the embedded service's endpoint is in the mount log: $DATA_DIR/mount-cache/photos/glacierfs.log)
MSG

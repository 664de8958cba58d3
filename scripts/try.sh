#!/usr/bin/env bash
# Set everything up and start the local Glacier vault service on loopback, storing in
# ~/.local/share/glacierfs/local-vault (or $1). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
DATA_DIR=${1:-$HOME/.local/share/glacierfs/local-vault}
exec .venv/bin/glacierfs serve --data-dir "$DATA_DIR"

#!/usr/bin/env bash
# Usage: run.sh DUMP_BIN PYTHON REFERENCE_DIR OUT_DIR [tied]
set -euo pipefail
rm -rf "$4"
"$1" "$4" ${5:-}
"$2" "$3/check_llama.py" "$4"

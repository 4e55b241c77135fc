#!/usr/bin/env bash
# The whole test suite on a fresh machine: Rust unit and integration tests (real gateway, mock
# upstream on loopback), then the official OpenAI Python SDK against the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --bins
cargo test --all-targets

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
SWITCHYARD_BIN="$PWD/target/debug/switchyard" .venv/bin/python -m pytest tests/python -q -p no:cacheprovider

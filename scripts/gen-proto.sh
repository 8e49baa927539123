#!/usr/bin/env bash
# Regenerate the checked-in protobuf code from the .proto files (Debian's protobuf-compiler, `apt-get install
# protobuf-compiler`; scripts/setup-env.sh installs it when run as root). tests/wire/test_wire_schema.py checks that
# the checked-in files are what this produces.
set -euo pipefail
cd "$(dirname "$0")/.."
protoc --python_out=. p2p_fast/protocols/pb/messages.proto
protoc --python_out=. tests/wire/v2.proto

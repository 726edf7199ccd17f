#!/usr/bin/env bash
# Runs the demo: SendIt (crates/sendit-example) behind toolgate, configured by
# examples/demo.toml. Builds both binaries first. Extra arguments go to `toolgate serve`.
#
#   examples/run-demo.sh
#   # then, in another terminal:
#   curl -s http://127.0.0.1:8080/mcp/sendit \
#     -H 'Authorization: Bearer tg_demo_not_a_secret_local_development_only' \
#     -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
#     -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}'
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cargo build --quiet -p sendit-example -p toolgate
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
export SENDIT_BIN="$target_dir/debug/sendit-example"
# The gateway prints the URL; the demo grant's token is fixed in examples/demo.toml.
echo "token: tg_demo_not_a_secret_local_development_only"
exec "$target_dir/debug/toolgate" serve --config "$repo/examples/demo.toml" "$@"

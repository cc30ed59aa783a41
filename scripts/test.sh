#!/usr/bin/env bash
# Runs agentwire's whole test suite, installing what it needs on a fresh machine:
# Debian packages for the WireGuard interop tests, the NAT lab (iptables, conntrack), the reverse-proxy test (caddy) and the store's PostgreSQL runs (postgresql), the third-party MCP clients (Python SDK,
# conformance suite) for the MCP front-end tests, cargo-fuzz for the fuzz smoke runs.
#
#   scripts/test.sh            everything
#   FUZZ_SECS=0 scripts/test.sh  skip the fuzz smoke runs
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECS="${FUZZ_SECS:-5}"
# A CI checkout is built once from scratch: incremental caches only cost disk (they doubled
# the target directory), and full debug info is not needed for test backtraces.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
  export CARGO_PROFILE_DEV_DEBUG=line-tables-only
fi
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

step() { printf '\n==> %s\n' "$*"; }

step "prerequisites"
need_apt=()
command -v wireguard-go >/dev/null || need_apt+=(wireguard-go)
command -v wg >/dev/null || need_apt+=(wireguard-tools)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v conntrack >/dev/null || need_apt+=(conntrack)
command -v caddy >/dev/null || need_apt+=(caddy)
# The store suite starts its own PostgreSQL cluster (as the postgres user) from these.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# The OAuth sign-in and consent pages are tested in headless Chromium.
command -v chromium >/dev/null || need_apt+=(chromium)
# `agentwire mcp`'s wall clock is turned back while it is stopped (tests/mcp_client.rs).
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need_apt+=(libfaketime)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
if [ "$FUZZ_SECS" != 0 ] && ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

step "MCP clients"
# Python SDK and conformance suite under target/mcp-clients/ (fast when already there).
tests/mcp/setup.sh

step "format and layering"
cargo fmt --all -- --check
# wire, proto and netstack are sans-IO: no tokio (clippy's disallowed-methods, below,
# keeps them off the clock).
if grep -rnE '\btokio\b' src/wire src/proto src/netstack | grep -vE ':\s*(//|///|//!)'; then
  echo "sans-IO layers must not use tokio" >&2
  exit 1
fi

step "clippy"
cargo clippy --all-targets --locked -- -D warnings

step "tests"
# In CI the PostgreSQL half of the store suite must run, not skip.
if [ "${CI:-}" = true ]; then export AGENTWIRE_REQUIRE_PG=1; fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
  cargo test --locked --doc
else
  cargo test --locked --no-fail-fast
fi

if [ "$FUZZ_SECS" != 0 ]; then
  step "fuzz smoke (${FUZZ_SECS}s per target)"
  for t in $(sed -n 's/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml | grep -v '^agentwire-fuzz$'); do
    mkdir -p "fuzz/corpus/$t"
    scratch=$(mktemp -d)
    # New inputs go to the scratch directory; the committed corpus only seeds the run.
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$FUZZ_SECS" -rss_limit_mb=4096 -print_final_stats=0 >/dev/null 2>"/tmp/fuzz-$t.log") \
      || { cat "/tmp/fuzz-$t.log" >&2; echo "fuzz target $t failed" >&2; exit 1; }
    rm -rf "$scratch"
    echo "fuzz $t: ok"
  done
fi

step "all tests passed"

#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, checks
# formatting and lints, builds once, and runs every test with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v git >/dev/null || missing+=(git)
command -v openssl >/dev/null || missing+=(openssl)
# App isolation: network namespaces, the host firewall, user and namespace switching.
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v nft >/dev/null || missing+=(nftables)
command -v setpriv >/dev/null || missing+=(util-linux)
# Build disks: a sparse file formatted ext4 and loop-mounted per build.
PATH="$PATH:/usr/sbin:/sbin" command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v mount >/dev/null || missing+=(mount)
command -v node >/dev/null || missing+=(nodejs npm)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -c 'import venv' 2>/dev/null || missing+=(python3-venv)
# Invitation email is sent to a real SMTP relay (aiosmtpd) in tests/invitations.rs.
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
# The Go and Rust corpus apps build with the server's toolchains, which builds find only
# in system folders (a rustup toolchain in a home folder is invisible to them).
[ -x /usr/bin/go ] || missing+=(golang-go)
[ -x /usr/bin/cargo ] || missing+=(cargo)
# The dashboard's tests drive headless Chromium over WebDriver.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# Custom domains are checked against pebble's challenge test server as the DNS.
command -v pebble-challtestsrv >/dev/null || missing+=(pebble)
# ...and a zone's own name servers are Debian's nsd.
[ -x /usr/sbin/nsd ] || missing+=(nsd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A Docker Engine, local base images and a registry for tests/docker.rs, kubernetes.rs
# and targets.rs (installs docker.io and busybox-static if missing, starts dockerd if
# nothing answers; idempotent).
scripts/docker-test-env.sh

# berth itself builds with the rustup toolchain; Debian's cargo (installed above for the
# corpus) is older and must not shadow it.
if [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# A throwaway PostgreSQL cluster on loopback: the integration suite runs a second time
# with berth's state on it (each test server gets its own database).
BERTH_TEST_POSTGRES_URL="$(scripts/postgres-test-env.sh)"
export BERTH_TEST_POSTGRES_URL

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# The second run: berth's integration tests, less those about the SQLite file itself
# (its permissions and where it may live) and `migrate-db`'s (which moves SQLite to
# Postgres in the first run already) and resources' (a resource's disk is one server's, so
# berth refuses resources on Postgres: tests/replicas_on_postgres.rs checks that refusal),
# the dashboard's resource tests (`chromium_resources_*`) among them;
# the unit tests and the other crates' tests do not touch the database.
on_postgres='package(berth) & kind(test) & not binary(security_store) & not binary(migrate_db) & not binary(resources) & not (binary(dashboard) & test(/^chromium_resources_/))'
status=0
# The first run on SQLite; two replicas on one database are tested on Postgres only.
cargo nextest run --workspace --locked --no-fail-fast -E 'not binary(replicas_on_postgres)' || status=1
BERTH_TEST_DATABASE=postgres cargo nextest run --workspace --locked --no-fail-fast -E "$on_postgres" || status=1
exit $status

#!/usr/bin/env bash
# tests/e2e/test_fresh_machine.sh — the README's first command on a fresh machine.
#
# Builds a throw-away Debian 12 root file system with debootstrap (minbase: no
# package of this machine is in it), copies a clean clone of the committed tree and
# the vendored database sources into it, and runs there, as root:
#   1. deploy/install.sh                 (network: Debian, Maven Central, crates.io)
#   2. deploy/quickstart.sh              (in its own network namespace: loopback only,
#                                         so its Kafka, PostgreSQL and gateway ports
#                                         never meet the host's stack)
# and checks that both succeed, that the job completed and the dashboard URL was
# printed, and that none of the test tools were installed (the quick start needs only
# the product). Each phase runs in a new mount and PID namespace whose root is the
# throw-away tree (pivot_root, so PostgreSQL's user namespace works inside it); when a
# phase ends, everything it started dies with its PID namespace.
#
# What is reused between runs (under $METADB_HOME/cache/fresh; download caches only,
# nothing installed): the debootstrap tarball, Debian's .deb files, the Maven and
# crates.io download caches. The Rust toolchain is the machine's own (rustup is part
# of this machine kind, as Java and Go are), bind-mounted read-only; Debian 12's cargo
# is too old for the gateway's crates.
#
# It takes ~12-20 min on 2 cores (DocumentDB and the gateway are built from source).
# MDB_SKIP_FRESH_MACHINE=1 skips it (exit 77, reported as skipped by ctest); CI runs it.
set -uo pipefail

SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
HOME_=${METADB_HOME:-$HOME/.metadb}
FC=${METADB_DEPLOY_CACHE:-$HOME_/cache}/fresh
MIRROR=${MDB_FRESH_MIRROR:-http://deb.debian.org/debian}
VENDOR=${METADB_DEPLOY_VENDOR_DIR:-$SRC/../shared/vendor}

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
finish() { echo "$PASS passed, $FAIL failed"; [ "$FAIL" = 0 ] && [ "$PASS" -gt 0 ]; exit $?; }

if [ "${MDB_SKIP_FRESH_MACHINE:-0}" = 1 ]; then
    echo "skipped: MDB_SKIP_FRESH_MACHINE=1"
    exit 77
fi
[ "$(id -u)" = 0 ] || { bad "needs root (debootstrap, namespaces)"; finish; }
for c in debootstrap unshare pivot_root git ip; do
    command -v "$c" >/dev/null || { bad "$c not installed (deploy/install.sh --with-tests)"; finish; }
done
[ -f "$VENDOR/SHA256SUMS" ] || { bad "no vendored database sources at $VENDOR"; finish; }
# rustup's cargo, also when ~/.cargo/bin is not on this shell's PATH.
export PATH=$PATH:$HOME/.cargo/bin
CARGO_BIN=$(command -v cargo) || { bad "no cargo on this machine (rustup)"; finish; }
TOOLCHAIN=$(cd "$(dirname "$(rustup which cargo 2>/dev/null || readlink -f "$CARGO_BIN")")/.." && pwd)
[ -x "$TOOLCHAIN/bin/cargo" ] || { bad "cannot find the Rust toolchain folder (got $TOOLCHAIN)"; finish; }

T0=$SECONDS
mkdir -p "$FC/apt-archives/partial" "$FC/m2" "$FC/cargo-registry"
BASE=$FC/bookworm-minbase.tar.gz
if [ ! -s "$BASE" ]; then
    echo "# debootstrap --variant=minbase bookworm (once; cached as $BASE)"
    tmp=$(mktemp -d /tmp/mdb-debootstrap.XXXXXX)
    if ! debootstrap --variant=minbase bookworm "$tmp" "$MIRROR" >"$FC/debootstrap.log" 2>&1; then
        tail -n 20 "$FC/debootstrap.log"; rm -rf "$tmp"; bad "debootstrap"; finish
    fi
    tar -C "$tmp" -czf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
    rm -rf "$tmp"
fi

R=$(mktemp -d /tmp/mdb-fresh.XXXXXX)
LOG=$R.log
cleanup() {
    [ "$FAIL" != 0 ] && [ -f "$LOG" ] && { echo "--- last lines of $LOG"; tail -n 60 "$LOG"; }
    rm -rf "$R" "$LOG"
}
trap cleanup EXIT
tar -C "$R" -xzf "$BASE"
cp /etc/resolv.conf "$R/etc/resolv.conf"
# The machine's own extra trust anchors (a network's TLS-inspecting egress CA, say) are
# the machine's, not the project's: ca-certificates picks them up when install.sh
# installs it, as it does on a machine where they were placed before.
if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$R/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates/. "$R/usr/local/share/ca-certificates/"
fi
# No service starts inside the tree on package installation (PostgreSQL's own cluster).
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d" && chmod 755 "$R/usr/sbin/policy-rc.d"
mkdir -p "$R/work/shared" "$R/root/.metadb/cache/m2" "$R/root/.cargo/registry" "$R$TOOLCHAIN"
git clone --quiet "$SRC" "$R/work/main" || { bad "git clone of the committed tree"; finish; }
cp -r "$VENDOR" "$R/work/shared/vendor"
echo "# fresh tree $R (clone of $(git -C "$SRC" rev-parse --short HEAD))"

# in_tree NET-FLAG COMMAND: runs COMMAND (bash -c) as root inside the tree, in new mount
# and PID namespaces (plus a new network namespace when NET-FLAG is --net).
in_tree() {
    local net=$1 cmd=$2
    unshare --mount --pid --fork $net bash -c '
        set -e
        R=$1 TC=$2 FC=$3 NET=$4 CMD=$5
        mount --make-rprivate /
        [ "$NET" = --net ] && ip link set lo up
        mount --bind "$R" "$R"
        mount -t proc proc "$R/proc"
        mount --rbind /dev "$R/dev"
        mount -t sysfs sysfs "$R/sys"
        mount --bind "$FC/apt-archives" "$R/var/cache/apt/archives"
        mount --bind "$FC/m2" "$R/root/.metadb/cache/m2"
        mount --bind "$FC/cargo-registry" "$R/root/.cargo/registry"
        mount --bind "$TC" "$R$TC" && mount -o remount,bind,ro "$R$TC"
        cd "$R"
        mkdir -p .oldroot
        pivot_root . .oldroot
        cd /
        umount -l /.oldroot
        exec env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
            PATH="$TC/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            CARGO_HOME=/root/.cargo bash -c "$CMD"
    ' in_tree "$R" "$TOOLCHAIN" "$FC" "$net" "$cmd"
}

echo "# phase 1: deploy/install.sh in the fresh tree"
t1=$SECONDS
in_tree "" "cd /work/main && bash deploy/install.sh" >"$LOG" 2>&1
rc=$?
check "deploy/install.sh succeeds on a fresh Debian 12 tree ($((SECONDS - t1))s)" [ $rc = 0 ]
tail -n 5 "$LOG" | sed 's/^/  | /'
[ $rc = 0 ] || finish

echo "# phase 2: deploy/quickstart.sh in the fresh tree (own network namespace)"
t2=$SECONDS
in_tree --net "cd /work/main && bash deploy/quickstart.sh" >"$LOG" 2>&1
rc=$?
check "deploy/quickstart.sh succeeds on the fresh tree ($((SECONDS - t2))s)" [ $rc = 0 ]
grep -E '^(install|stack):|job completed|dashboard|done in' "$LOG" | tail -n 25 | sed 's/^/  | /'
check "the quick start's job completed" grep -q '^job completed' "$LOG"
check "the quick start printed query results" grep -q 'of [0-9]* series' "$LOG"
check "the quick start printed the dashboard URL" grep -q 'http://127.0.0.1:8080/' "$LOG"
check "the database was the DocumentDB gateway" grep -q 'DocumentDB gateway answers' "$LOG"
check "the second install run (inside the quick start) was cached" grep -q 'documentdb: cached' "$LOG"
# (nodejs is no longer in this list: npm installs the product's OHIF viewer)
for pkg in orthanc chromium valgrind strace clang dcmtk libcmocka-dev burrow prometheus golang-go; do
    check "no test tool installed: $pkg" bash -c "! chroot '$R' dpkg-query -W -f='\${Status}' $pkg 2>/dev/null | grep -q 'install ok installed'"
done
check "the product install put the OHIF viewer under /root/.metadb/cache/ohif/viewer" \
    bash -c "grep -q 'src=\"/viewer/metadb-boot.js\"' '$R/root/.metadb/cache/ohif/viewer/index.html' &&
             grep -q 'PUBLIC_URL = \"/viewer/\"' '$R/root/.metadb/cache/ohif/viewer/metadb-boot.js'"
check "no test caches (playwright, venv, docker compose) in the fresh tree" \
    bash -c "[ ! -e '$R/root/.metadb/cache/node' ] && [ ! -e '$R/root/.metadb/cache/venv' ] && [ ! -e '$R/root/.metadb/cache/bin/docker-compose' ]"
echo "# took $((SECONDS - T0))s in all"
finish

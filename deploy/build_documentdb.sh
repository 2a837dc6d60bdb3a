#!/usr/bin/env bash
# deploy/build_documentdb.sh — builds the local MongoDB-wire database once:
# pgvector, pg_cron, DocumentDB's two PostgreSQL extensions (pg_documentdb_core,
# pg_documentdb) for Debian's PostgreSQL 15, and DocumentDB's own gateway
# (pg_documentdb_gw, Rust, crates from crates.io). Called by deploy/install.sh.
#
# Sources come from pinned archives (no reachable registry carries them): the
# folder named by METADB_DEPLOY_VENDOR_DIR, else ../shared/vendor beside the
# checkout. Their checksums are verified against SHA256SUMS before anything is
# unpacked. Build products are cached under $CACHE/documentdb/<stamp>/ (the
# stamp is the checksums plus this script's content, not its path, so every clone
# shares one build): the extension files are
# staged there with DESTDIR and copied into PostgreSQL's directories, the gateway
# binary is $CACHE/bin/pg_documentdb_gw. A second run finds the stamp, checks the
# installed files against the staged ones and does nothing else.
#
# Facts this script encodes (measured on Debian 12; ../shared/vendor/README.md):
#  - Debian's libbson 1.23 lacks BSON_SUBTYPE_SENSITIVE (libbson 1.26): defined
#    as 0x08 when absent, the switch on it takes (int) subtype.
#  - libintelrdfpmath-dev ships libbidgcc000.a but no intelmathlib.pc: one is
#    written into the build's private PKG_CONFIG_PATH.
#  - Debian 12's pg_cron 1.4 refuses schedules in seconds: pg_cron 1.6.3 is built.
#  - CREATE EXTENSION documentdb CASCADE needs `vector` (not in Debian 12).
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
METADB_HOME=${METADB_HOME:-$HOME/.metadb}
CACHE=${METADB_DEPLOY_CACHE:-$METADB_HOME/cache}
PG_CONFIG=${METADB_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
JOBS=${MDB_JOBS:-2}

DOCUMENTDB_TGZ=documentdb-b2e220c4.tar.gz
PGVECTOR_TGZ=pgvector-0.8.0.tar.gz
PGCRON_TGZ=pg_cron-1.6.3.tar.gz

log() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

vendor_dir() {
    local d
    for d in "${METADB_DEPLOY_VENDOR_DIR:-}" "$SRC_DIR/../shared/vendor"; do
        [ -n "$d" ] && [ -f "$d/SHA256SUMS" ] && [ -f "$d/$DOCUMENTDB_TGZ" ] && { (cd "$d" && pwd); return 0; }
    done
    die "DocumentDB sources not found: put $DOCUMENTDB_TGZ (DocumentDB commit b2e220c4, github.com/documentdb/documentdb), $PGVECTOR_TGZ (pgvector v0.8.0) and $PGCRON_TGZ (pg_cron v1.6.3) with their SHA256SUMS into a folder and set METADB_DEPLOY_VENDOR_DIR to it"
}

VENDOR=$(vendor_dir)
(cd "$VENDOR" && sha256sum --quiet -c SHA256SUMS) || die "checksums in $VENDOR/SHA256SUMS do not match the archives: refusing to build from them"
STAMP=$( { cat "$VENDOR/SHA256SUMS"; sha256sum <"${BASH_SOURCE[0]}"; "$PG_CONFIG" --version; } | sha256sum | cut -c1-16)
OUT=$CACHE/documentdb/$STAMP
STAGE=$OUT/stage
GW=$CACHE/bin/pg_documentdb_gw

# installed_matches: every file staged for PostgreSQL's directories is in place, byte-identical.
installed_matches() {
    [ -f "$OUT/.done" ] || return 1
    local f
    while IFS= read -r f; do
        cmp -s "$STAGE$f" "$f" || return 1
    done < <(cd "$STAGE" && find . -type f | sed 's#^\.##')
}

install_staged() {
    (cd "$STAGE" && find . -type f) | while IFS= read -r f; do
        install -D -m 0644 "$STAGE/${f#./}" "/${f#./}"
    done
    # Shared objects need the execute bit on some loaders; keep PGXS's modes for them.
    find "$STAGE" -name '*.so' | while IFS= read -r f; do chmod 0755 "${f#"$STAGE"}"; done
}

if installed_matches && [ -x "$GW" ] && [ -f "$OUT/.gw" ]; then
    log "documentdb: cached ($OUT, gateway $GW)"
    exit 0
fi

if [ -f "$OUT/.done" ] && [ -x "$GW" ] && [ -f "$OUT/.gw" ]; then
    install_staged
    log "documentdb: installed the cached build into PostgreSQL's directories"
    exit 0
fi

command -v cargo >/dev/null || die "cargo not found: the DocumentDB gateway is Rust (install rustup's toolchain or Debian's cargo >= 1.80)"
[ -x "$PG_CONFIG" ] || die "$PG_CONFIG not found (apt-get install postgresql-server-dev-15)"

T0=$SECONDS
WORK=$CACHE/documentdb/build
rm -rf "$WORK" "$STAGE"
mkdir -p "$WORK" "$STAGE"
tar -xzf "$VENDOR/$DOCUMENTDB_TGZ" -C "$WORK"
tar -xzf "$VENDOR/$PGVECTOR_TGZ" -C "$WORK"
tar -xzf "$VENDOR/$PGCRON_TGZ" -C "$WORK"
DD=$(find "$WORK" -maxdepth 1 -type d -name 'documentdb-*' | head -n1)
PGV=$(find "$WORK" -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
PGC=$(find "$WORK" -maxdepth 1 -type d -name 'pg_cron-*' | head -n1)
[ -d "$DD" ] && [ -d "$PGV" ] && [ -d "$PGC" ] || die "unexpected archive layout in $WORK"

# intelmathlib.pc (fact 4): the position-independent archive and its headers.
mkdir -p "$WORK/pkgconfig"
cat >"$WORK/pkgconfig/intelmathlib.pc" <<'EOF'
Name: intelmathlib
Description: Intel Decimal Floating-Point Math Library (Debian libintelrdfpmath-dev)
Version: 2.0
Cflags: -I/usr/include
Libs: /usr/lib/x86_64-linux-gnu/libbidgcc000.a
EOF
export PKG_CONFIG_PATH=$WORK/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}

# libbson 1.23 (fact 3).
f=$DD/pg_documentdb/src/operators/bson_expression_type_operators.c
grep -q 'define BSON_SUBTYPE_SENSITIVE' "$f" || {
    # After the file's last #include, so the macro never shadows a newer libbson's enum.
    last=$(grep -n '^[[:space:]]*#include' "$f" | tail -n1 | cut -d: -f1)
    sed -i "${last}a #ifndef BSON_SUBTYPE_SENSITIVE\\n#define BSON_SUBTYPE_SENSITIVE 0x08\\n#endif" "$f"
    sed -i 's/switch (subtype)$/switch ((int) subtype)/' "$f"
}

pgxs() { make -C "$1" -j"$JOBS" PG_CONFIG="$PG_CONFIG" >>"$WORK/build.log" 2>&1 &&
         make -C "$1" PG_CONFIG="$PG_CONFIG" DESTDIR="$STAGE" install >>"$WORK/build.log" 2>&1; }
log "documentdb: building pgvector, pg_cron, pg_documentdb_core, pg_documentdb (log: $WORK/build.log)"
pgxs "$PGV" || { tail -n 30 "$WORK/build.log"; die "building pgvector failed"; }
pgxs "$PGC" || { tail -n 30 "$WORK/build.log"; die "building pg_cron failed"; }
pgxs "$DD/pg_documentdb_core" || { tail -n 30 "$WORK/build.log"; die "building pg_documentdb_core failed"; }
# pg_documentdb links against the core's shared object as installed in PostgreSQL's directory.
install_staged
pgxs "$DD/pg_documentdb" || { tail -n 40 "$WORK/build.log"; die "building pg_documentdb failed"; }
touch "$OUT/.done"
log "documentdb: extensions built in $((SECONDS - T0))s"

log "documentdb: building the gateway pg_documentdb_gw (cargo --release, crates from crates.io)"
export CARGO_TARGET_DIR=$CACHE/documentdb/cargo-target
(cd "$DD/pg_documentdb_gw" && cargo build --release --locked -j "$JOBS" >>"$WORK/build.log" 2>&1) ||
    { tail -n 30 "$WORK/build.log"; die "building pg_documentdb_gw failed"; }
mkdir -p "$CACHE/bin"
# The crate's binary is documentdb_gateway; it is installed under the project's name for it.
install -m 0755 "$CARGO_TARGET_DIR/release/documentdb_gateway" "$GW.tmp" || die "cargo built no documentdb_gateway binary"
mv "$GW.tmp" "$GW"
touch "$OUT/.gw"
install_staged
rm -rf "$WORK"
# Builds of other versions (an older stamp) are dead weight; the cargo target stays (incremental).
find "$CACHE/documentdb" -mindepth 1 -maxdepth 1 -type d ! -name "$STAMP" ! -name cargo-target -exec rm -rf {} +
log "documentdb: built and installed in $((SECONDS - T0))s"

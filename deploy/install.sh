#!/usr/bin/env bash
# deploy/install.sh [--with-tests] — takes a fresh Debian 12 machine to "ready to
# build and run metadb": the Debian packages the product needs, Apache Kafka's broker
# jars from Maven Central, and the local database (DocumentDB's PostgreSQL extensions
# and its gateway, built from the pinned sources in ../shared/vendor or
# $METADB_DEPLOY_VENDOR_DIR by deploy/build_documentdb.sh; skipped when a mongod is on
# PATH), and the OHIF viewer (npm @ohif/app, pinned) that metadb-api serves under
# /viewer/, and the dashboard's chart library (npm chart.js, pinned, copied into
# api/web/vendor/). That is all deploy/quickstart.sh uses.
#
# --with-tests adds what the test suite and the benchmarks call (tests/run.sh and
# bench/run.sh pass it): cmocka, DCMTK and GDCM's tools, Orthanc, Burrow, Prometheus,
# Chromium with playwright-core (npm), clang for the fuzzers, clang-format, strace, valgrind,
# debootstrap, the docker compose v2 CLI plugin (built from the Go module proxy) and a
# Python venv with dicomweb-client. Every Python module and program any script of the
# project imports or calls is named here (never left to a package's Recommends).
#
# Idempotent and cached: everything downloaded or built lands under
# $METADB_HOME/cache (default $HOME/.metadb/cache) and every step checks its
# cache first, so a second run downloads and builds nothing and prints "cached"
# for each step. Run it as root (or with sudo available for apt-get).
#
# Environment:
#   METADB_HOME           state + cache directory (default $HOME/.metadb)
#   METADB_DEPLOY_SKIP_BROWSER=1 skip playwright-core (no browser tests)
#   METADB_DEPLOY_SKIP_COMPOSE=1 skip building the docker compose plugin
#   METADB_DEPLOY_SKIP_VIEWER=1  skip the OHIF viewer (npm @ohif/app, served under /viewer/)
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
METADB_HOME=${METADB_HOME:-$HOME/.metadb}
CACHE=$METADB_HOME/cache

WITH_TESTS=0
VIEWER_ONLY=0
for a in "$@"; do
    case $a in
        --with-tests) WITH_TESTS=1 ;;
        --viewer-only) VIEWER_ONLY=1 ;;  # just the npm web assets: the OHIF viewer and chart.js (deploy/Dockerfile's viewer stage)
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install: unknown argument '$a' (--with-tests, --viewer-only)" >&2; exit 2 ;;
    esac
done

# Debian packages of the product: build (C toolchain, the C libraries), run (Kafka's
# JVM through TOOL_PACKAGES, kcat and jq for the stack's readiness checks, python3 with
# pymongo for its database pings, pydicom + numpy for the quick start's synthetic
# archive, openssl for the gateway's certificate) and the database build (PostgreSQL 15,
# its server headers and DocumentDB's build dependencies).
APT_PACKAGES="build-essential cmake pkg-config librdkafka-dev libmongoc-dev libbson-dev libgdcm-dev libdcmtk-dev libpng-dev libjpeg62-turbo-dev libjansson-dev uuid-dev libmicrohttpd-dev libcurl4-openssl-dev kcat jq python3 python3-pymongo python3-pydicom python3-numpy openssl ca-certificates util-linux postgresql-15 postgresql-server-dev-15 libpcre2-dev libkrb5-dev libintelrdfpmath-dev postgresql-15-postgis-3 postgresql-15-rum libssl-dev"
# Test and benchmark tools (--with-tests).
TEST_APT_PACKAGES="libcmocka-dev dcmtk libgdcm-tools orthanc orthanc-dicomweb burrow prometheus chromium clang libclang-rt-14-dev strace valgrind clang-format python3-yaml python3-venv iproute2 procps debootstrap"
# Toolchains the later steps need; installed from Debian only when the command is missing.
#   command:package
TOOL_PACKAGES="java:default-jre-headless mvn:maven curl:curl npm:npm"
TEST_TOOL_PACKAGES="node:nodejs npm:npm go:golang-go"
if [ $WITH_TESTS = 1 ]; then
    APT_PACKAGES="$APT_PACKAGES $TEST_APT_PACKAGES"
    TOOL_PACKAGES="$TOOL_PACKAGES $TEST_TOOL_PACKAGES"
fi

COMPOSE_VERSION=v2.40.3
PLAYWRIGHT_VERSION=1.65.1

START=$(date +%s)
log() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"; fi
}

mkdir -p "$CACHE/bin"

# ---------------------------------------------------------------- apt packages
apt_step() {
    local missing=() pkg tool
    for pkg in $APT_PACKAGES; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
    done
    for pair in $TOOL_PACKAGES; do
        tool=${pair%%:*}; pkg=${pair#*:}
        command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "apt packages: cached (all $(wc -w <<<"$APT_PACKAGES") installed)"
        return
    fi
    log "apt packages: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------- Kafka jars
kafka_step() {
    local libs=$CACHE/kafka-libs stamp=$CACHE/kafka-libs/.pom.sha256 want new
    want=$(sha256sum "$SRC_DIR/deploy/pom.xml" | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && ls "$libs"/kafka_2.13-*.jar >/dev/null 2>&1; then
        log "kafka jars: cached ($(ls "$libs"/*.jar | wc -l) jars in $libs)"
        return
    fi
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    new=$CACHE/kafka-libs.new
    rm -rf "$new"
    local mvn_args=(-q -B -Dstyle.color=never "-Dmaven.repo.local=$CACHE/m2" -f "$SRC_DIR/deploy/pom.xml"
        dependency:copy-dependencies "-DoutputDirectory=$new")
    # Offline first: the local repository may already hold everything.
    if ! mvn -o "${mvn_args[@]}" >/dev/null 2>&1; then
        log "kafka jars: fetching from Maven Central"
        rm -rf "$new"
        mvn "${mvn_args[@]}" || die "maven could not fetch the Kafka jars (deploy/pom.xml)"
    fi
    ls "$new"/kafka_2.13-*.jar >/dev/null 2>&1 || die "maven ran but no kafka_2.13 jar in $new"
    # A running broker keeps using its jars: replace the folder only if it differs.
    if [ -d "$libs" ] && diff -rq -x .pom.sha256 "$libs" "$new" >/dev/null 2>&1; then
        rm -rf "$new"
        log "kafka jars: already up to date in $libs"
    else
        rm -rf "$libs.old"
        [ -d "$libs" ] && mv "$libs" "$libs.old"
        mv "$new" "$libs"
        rm -rf "$libs.old"
        log "kafka jars: installed $(ls "$libs"/*.jar | wc -l) jars into $libs"
    fi
    echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- Go builds
go_env() {
    command -v go >/dev/null || die "go not found: install Go >= 1.24 (Debian 12's golang-go is too old for docker compose $COMPOSE_VERSION)"
    export GOPATH=$CACHE/go GOFLAGS=-modcacherw
    export GOCACHE=${GOCACHE:-$(go env GOCACHE)}
}

# Copies a module from the module cache into $2 as a writable tree and builds there
# (plain `go install mod@ver` refuses modules with exclude directives).
go_module_src() {
    local mod=$1 ver=$2 dst=$3 dir
    dir=$(go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -n "$dir" ] && [ -d "$dir" ] || die "go mod download $mod@$ver failed"
    rm -rf "$dst"
    cp -r "$dir" "$dst"
    chmod -R u+w "$dst"
}

# The local database: DocumentDB + gateway (deploy/build_documentdb.sh caches its build).
documentdb_step() {
    if command -v mongod >/dev/null 2>&1; then
        log "documentdb: not needed (mongod found at $(command -v mongod))"
        return
    fi
    # Debian 12's pg_cron 1.4 refuses DocumentDB's schedules in seconds; 1.6.3 is built instead.
    if [ "$(dpkg-query -W -f='${Status}' postgresql-15-cron 2>/dev/null)" = "install ok installed" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q postgresql-15-cron
    fi
    METADB_HOME=$METADB_HOME bash "$SRC_DIR/deploy/build_documentdb.sh"
}

compose_step() {
    if [ "${METADB_DEPLOY_SKIP_COMPOSE:-0}" = 1 ]; then log "docker compose: skipped (METADB_DEPLOY_SKIP_COMPOSE=1)"; return; fi
    local bin=$CACHE/bin/docker-compose plugin=$HOME/.docker/cli-plugins/docker-compose built=0
    if ! { [ -x "$bin" ] && [[ "$("$bin" version 2>/dev/null)" == *"$COMPOSE_VERSION"* ]]; }; then
        go_env
        log "docker compose: building $COMPOSE_VERSION from the Go module proxy"
        local src=$CACHE/compose-src
        go_module_src github.com/docker/compose/v2 "$COMPOSE_VERSION" "$src"
        (cd "$src" && go build -trimpath \
            -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
            -o "$bin.tmp" ./cmd) || die "building docker compose failed"
        mv "$bin.tmp" "$bin"
        rm -rf "$src"
        built=1
    fi
    if [ -x "$plugin" ] && cmp -s "$bin" "$plugin"; then
        [ "$built" = 1 ] && log "docker compose: built; $plugin already identical" && return
        log "docker compose: cached ($plugin, $COMPOSE_VERSION)"
        return
    fi
    mkdir -p "$(dirname "$plugin")"
    cp "$bin" "$plugin.tmp" && mv "$plugin.tmp" "$plugin"
    log "docker compose: installed $plugin ($COMPOSE_VERSION)"
}

playwright_step() {
    if [ "${METADB_DEPLOY_SKIP_BROWSER:-0}" = 1 ]; then log "playwright-core: skipped (METADB_DEPLOY_SKIP_BROWSER=1)"; return; fi
    local dir=$CACHE/node pj=$CACHE/node/node_modules/playwright-core/package.json
    if [ -f "$pj" ] && grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$pj" 2>/dev/null; then
        log "playwright-core: cached ($dir/node_modules, $PLAYWRIGHT_VERSION)"
        return
    fi
    command -v npm >/dev/null || die "npm not found (apt-get install npm)"
    log "playwright-core: installing $PLAYWRIGHT_VERSION into $dir"
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name":"metadb-test-deps","private":true}' >"$dir/package.json"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
        "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null || die "npm install playwright-core failed"
}

# ---------------------------------------------------------------- DICOMweb client (NL/QIDO engineer)
# >>> dicomweb-client venv: an external QIDO-RS client for tests/integration/test_qido.py
DICOMWEB_CLIENT_VERSION=0.61.2
dicomweb_client_step() {
    local venv=$CACHE/venv
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import dicomweb_client, sys; sys.exit(0 if dicomweb_client.__version__ == '$DICOMWEB_CLIENT_VERSION' else 1)" 2>/dev/null; then
        log "dicomweb-client: cached ($venv, $DICOMWEB_CLIENT_VERSION)"
        return
    fi
    log "dicomweb-client: installing $DICOMWEB_CLIENT_VERSION into $venv"
    /usr/bin/python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "dicomweb-client==$DICOMWEB_CLIENT_VERSION" \
        || die "pip install dicomweb-client failed"
}
# <<< dicomweb-client venv

# ---------------------------------------------------------------- OHIF viewer (viewer helper)
# >>> OHIF viewer: the @ohif/app npm package ships a built dist/ (webpack, public
# path "/"). It is unpacked into $CACHE/ohif/viewer-$OHIF_VERSION, moved under
# /viewer/ (index.html's absolute URLs, window.PUBLIC_URL and webpack's chunk
# public path) and given an app-config.js that points at metadb's own /dicomweb;
# $CACHE/ohif/viewer is a symlink to it, the default of api.viewer_dir.
OHIF_VERSION=3.13.2
ohif_step() {
    if [ "${METADB_DEPLOY_SKIP_VIEWER:-0}" = 1 ]; then log "OHIF viewer: skipped (METADB_DEPLOY_SKIP_VIEWER=1)"; return; fi
    local base=$CACHE/ohif dir=$CACHE/ohif/viewer-$OHIF_VERSION
    if [ -f "$dir/.metadb-ready" ] && [ "$(readlink "$base/viewer")" = "viewer-$OHIF_VERSION" ]; then
        log "OHIF viewer: cached ($dir)"
        return
    fi
    command -v npm >/dev/null || die "npm not found (apt-get install npm)"
    log "OHIF viewer: installing @ohif/app $OHIF_VERSION into $dir"
    mkdir -p "$base"
    local tgz=$base/ohif-app-$OHIF_VERSION.tgz tmp=$base/.unpack-$$
    if [ ! -s "$tgz" ]; then
        (cd "$base" && npm pack --silent --loglevel=error "@ohif/app@$OHIF_VERSION" >/dev/null) \
            || die "npm pack @ohif/app@$OHIF_VERSION failed"
    fi
    rm -rf "$tmp" "$dir" && mkdir -p "$tmp"
    tar -xzf "$tgz" -C "$tmp" || die "cannot unpack $tgz"
    [ -f "$tmp/package/dist/index.html" ] || die "@ohif/app $OHIF_VERSION has no dist/index.html"
    mv "$tmp/package/dist" "$dir" && rm -rf "$tmp"
    # served under /viewer/: absolute URLs in index.html, the app's PUBLIC_URL, and
    # the chunk loaders' public path; no service worker (it would cache patient data)
    sed -i -e 's#\(href\|src\)="/#\1="/viewer/#g' -e 's#window.PUBLIC_URL="/"#window.PUBLIC_URL="/viewer/"#g' \
        -e 's#<script rel="preload" as="script" type="module" src="/viewer/init-service-worker.js"></script>##' \
        "$dir/index.html"
    grep -q 'PUBLIC_URL="/viewer/"' "$dir/index.html" || die "OHIF's index.html has an unknown layout (PUBLIC_URL)"
    # its two inline scripts move to a file, so /viewer/'s CSP needs no 'unsafe-inline' for scripts
    printf '%s\n' 'window.PUBLIC_URL = "/viewer/";' 'function browserImportFunction(n) { return import(n); }' >"$dir/metadb-boot.js"
    sed -i -e 's#<script>console.time("scriptToView"),window.PUBLIC_URL="/viewer/"</script>#<script src="/viewer/metadb-boot.js"></script>#' \
        -e 's#<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/viewer/"</script>##' "$dir/index.html"
    ! grep -q '<script>' "$dir/index.html" || die "OHIF's index.html has inline scripts metadb does not know"
    grep -l '__webpack_require__.p = "/";' "$dir"/*.js | xargs -r sed -i 's#__webpack_require__.p = "/";#__webpack_require__.p = "/viewer/";#'
    sed -i 's#url(/\([^/]\)#url(/viewer/\1#g' "$dir"/*.css   # the bundled font
    rm -f "$dir/sw.js" "$dir/init-service-worker.js" "$dir/_headers" "$dir/_redirects" "$dir/serve.json"
    cp "$SRC_DIR/deploy/ohif-app-config.js" "$dir/app-config.js"
    touch "$dir/.metadb-ready"
    ln -sfn "viewer-$OHIF_VERSION" "$base/viewer"
    log "OHIF viewer: installed $dir ($(du -sh "$dir" | cut -f1))"
}
# <<< OHIF viewer

# ---------------------------------------------------------------- chart library (facets helper)
# >>> chart.js: the dashboard's distribution charts (api/web/facets.js). The pinned
# npm package is packed into $CACHE/web; its self-contained UMD build is copied to
# api/web/vendor/ (git-ignored), inside the folder metadb-api serves (api.web_dir),
# so the page loads it from its own origin (CSP script-src 'self').
CHARTJS_VERSION=4.5.1
chartjs_step() {
    local base=$CACHE/web dest=$SRC_DIR/api/web/vendor
    local tgz=$base/chart.js-$CHARTJS_VERSION.tgz file=$dest/chart.umd.min.js stamp=$dest/chart.js.version
    if [ -f "$file" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$CHARTJS_VERSION" ]; then
        log "chart.js: cached ($file, $CHARTJS_VERSION)"
        return
    fi
    mkdir -p "$base" "$dest"
    if [ ! -f "$tgz" ]; then
        command -v npm >/dev/null || die "npm not found (apt-get install npm)"
        (cd "$base" && npm pack --silent --loglevel=error "chart.js@$CHARTJS_VERSION" >/dev/null) \
            || die "npm pack chart.js@$CHARTJS_VERSION failed"
    fi
    local tmp=$base/.unpack-$$
    rm -rf "$tmp" && mkdir -p "$tmp"
    tar -xzf "$tgz" -C "$tmp" package/dist/chart.umd.min.js package/LICENSE.md \
        || die "chart.js $CHARTJS_VERSION: no dist/chart.umd.min.js in $tgz"
    # no source map is shipped: drop the comment that would make browsers ask for it
    sed '/^\/\/# sourceMappingURL=/d' "$tmp/package/dist/chart.umd.min.js" >"$file.tmp" && mv "$file.tmp" "$file"
    cp "$tmp/package/LICENSE.md" "$dest/chart.js.LICENSE.md"
    echo "$CHARTJS_VERSION" >"$stamp"
    rm -rf "$tmp"
    log "chart.js: installed $file ($CHARTJS_VERSION)"
}
# <<< chart.js

if [ $VIEWER_ONLY = 1 ]; then
    ohif_step
    chartjs_step  # the dashboard's other npm asset (deploy/Dockerfile copies api/web/vendor from this stage too)
    log "done in $(( $(date +%s) - START ))s (METADB_HOME=$METADB_HOME, viewer only)"
    exit 0
fi
apt_step
kafka_step
ohif_step
chartjs_step
documentdb_step
if [ $WITH_TESTS = 1 ]; then
    compose_step
    playwright_step
    dicomweb_client_step
fi
log "done in $(( $(date +%s) - START ))s (METADB_HOME=$METADB_HOME)"

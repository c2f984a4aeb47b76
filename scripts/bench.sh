#!/usr/bin/env bash
# `make bench`: the same SSE workloads through direct / sidecar / nginx / HAProxy,
# interleaved in one run, on loopback; prints a markdown table (absolute figures,
# sidecar/nginx and sidecar/haproxy ratios) and writes it to bench/results/.
#
#   scripts/bench.sh            full run: 3 rounds, ~45 min on the 2-core bench machine
#                               (+~1.5 min per capacity retry below 9,000 streams)
#   scripts/bench.sh --smoke    every workload tiny (~50 streams, seconds each), for CI;
#                               exits non-zero when a workload fails (errors, zero events),
#                               never on performance numbers
#
# Options:
#   --no-build            use the binaries as they are (default: cargo build --release --bins)
#   --targets LIST        comma-separated subset of direct,sidecar,nginx,haproxy,floor,baseline;
#                         default all but floor and baseline. floor = examples/floor_relay.rs, a
#                         relay with no user-space work at all: the kernel's floor for nginx's
#                         design, a yardstick column (sidecar/floor), not a peer. baseline = an
#                         earlier sidecar binary ($SSE_SIDECAR_BASELINE), run interleaved with
#                         the current one: a before/after column (sidecar/baseline).
#                         resume, redis = the current sidecar with every path resumable
#                         (resume.paths ["/"]), on the memory store or on a redis-server the run
#                         starts: the cost of resume, as columns resume/sidecar and redis/sidecar
#   --workloads LIST      comma-separated subset of latency,fanout,memory,capacity,throughput,
#                         tls-h2-latency,tls-h2-memory,tls-h1-memory,tls-h2-capacity
#   --out DIR             where <date>.md/.json go (default bench/results; smoke: temp dir only)
#   --rounds N            repeat every workload but capacity N times, rotating the target order;
#                         the table shows the median (default 3; smoke 1)
#   --latency-streams N --latency-duration DUR   (e.g. a medium run: 1000 streams for 10s)
# Env: SSE_BENCH, SSE_SIDECAR, SSE_SIDECAR_BASELINE (binary paths), BENCH_KEEP=1 keeps the temp dir; the
#   workload sizes (LAT_STREAMS, LAT_DUR, FAN_STREAMS, MEM_STREAMS, CAP_MAX, CAP_HOLD,
#   CAP_TRIES, THR_DUR, H2_LAT_CONNS, H2_MEM_STREAMS, H2_MEM_CONNS, H1_MEM_STREAMS, H2_CAP_MAX,
#   H2_CAP_CONNS, … see below) override the defaults.
#
# The workloads (full / smoke):
#   latency     1,000 / 50 streams × 10 events/s for 30 / 2 s; added latency = proxy − direct
#   fanout      5,000 / 50 streams on the origin's shared 1 s ticker for 30 / 3 s;
#               CPU (user+sys of the proxy's process group) per 1,000 events delivered
#   memory      5,000 / 50 idle streams held 10 / 2 s; (RSS loaded − RSS idle) / streams;
#               the sidecar sends heartbeats every 1 s, nginx and HAProxy have none
#   capacity    the most streams (≤ 9,000 / 50) held 60 / 4 s with no error; the sidecar
#               heartbeats every 1 s and a stream silent for 3 s counts as an error
#   throughput  one stream of 64 KiB events read as fast as possible for 10 / 2 s, MiB/s
# and the same over TLS (a CA and a certificate for 127.0.0.1 made with openssl for the run;
# every proxy offers ALPN h2 and http/1.1 on one TLS listener, the app behind it stays plain):
#   tls-h2-latency   latency over TLS+h2: 1,000 / 20 streams over 10 / 2 connections; "added"
#                    is still against direct plain HTTP/1.1 to the origin (a direct case runs)
#   tls-h2-memory    4,000 / 40 idle streams over 40 / 2 h2 connections, held 10 / 1 s
#   tls-h1-memory    2,000 / 20 idle TLS HTTP/1.1 streams, one per connection, 10 / 1 s
#   tls-h2-capacity  ≤ 9,000 / 40 streams over 90 / 2 h2 connections, held 60 / 2 s
# The sidecar heartbeats every 1 s in every TLS workload.
# Each proxy is started fresh for every (workload, target) case, in its own process
# group, so RSS baselines are clean and CPU is summed over exactly its processes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SMOKE=0
BUILD=1
TARGETS=direct,sidecar,nginx,haproxy
WORKLOADS=latency,fanout,memory,capacity,throughput,tls-h2-latency,tls-h2-memory,tls-h1-memory,tls-h2-capacity
OUT=
LAT_STREAMS_ARG=
LAT_DUR_ARG=
ROUNDS_ARG=
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --no-build) BUILD=0 ;;
        --targets) TARGETS=$2; shift ;;
        --workloads) WORKLOADS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --latency-streams) LAT_STREAMS_ARG=$2; shift ;;
        --latency-duration) LAT_DUR_ARG=$2; shift ;;
        --rounds) ROUNDS_ARG=$2; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

# Every size below may be overridden from the environment (e.g. CAP_MAX=2000 CAP_HOLD=10s).
if [ "$SMOKE" = 1 ]; then
    : "${LAT_STREAMS:=50}" "${LAT_RAMP:=500ms}" "${LAT_DUR:=2s}"
    : "${FAN_STREAMS:=50}" "${FAN_RAMP:=500ms}" "${FAN_DUR:=3s}"
    : "${MEM_STREAMS:=50}" "${MEM_RAMP:=500ms}" "${MEM_DUR:=2s}"
    : "${CAP_MAX:=50}" "${CAP_RAMP:=500ms}" "${CAP_HOLD:=4s}" "${CAP_TRIES:=1}"
    : "${THR_DUR:=2s}" "${ROUNDS:=1}" "${SETTLE:=0.2}"
    : "${H2_LAT_STREAMS:=20}" "${H2_LAT_CONNS:=2}" "${H2_LAT_RAMP:=200ms}" "${H2_LAT_DUR:=1s}"
    : "${H2_MEM_STREAMS:=40}" "${H2_MEM_CONNS:=2}" "${H2_MEM_RAMP:=200ms}" "${H2_MEM_DUR:=1s}"
    : "${H1_MEM_STREAMS:=20}" "${H1_MEM_RAMP:=200ms}" "${H1_MEM_DUR:=1s}"
    : "${H2_CAP_MAX:=40}" "${H2_CAP_CONNS:=2}" "${H2_CAP_RAMP:=200ms}" "${H2_CAP_HOLD:=2s}"
else
    : "${LAT_STREAMS:=1000}" "${LAT_RAMP:=5s}" "${LAT_DUR:=30s}"
    : "${FAN_STREAMS:=5000}" "${FAN_RAMP:=10s}" "${FAN_DUR:=30s}"
    : "${MEM_STREAMS:=5000}" "${MEM_RAMP:=10s}" "${MEM_DUR:=10s}"
    : "${CAP_MAX:=9000}" "${CAP_RAMP:=20s}" "${CAP_HOLD:=60s}" "${CAP_TRIES:=3}"
    : "${THR_DUR:=10s}" "${ROUNDS:=3}" "${SETTLE:=1}"
    : "${H2_LAT_STREAMS:=1000}" "${H2_LAT_CONNS:=10}" "${H2_LAT_RAMP:=5s}" "${H2_LAT_DUR:=30s}"
    : "${H2_MEM_STREAMS:=4000}" "${H2_MEM_CONNS:=40}" "${H2_MEM_RAMP:=10s}" "${H2_MEM_DUR:=10s}"
    : "${H1_MEM_STREAMS:=2000}" "${H1_MEM_RAMP:=10s}" "${H1_MEM_DUR:=10s}"
    : "${H2_CAP_MAX:=9000}" "${H2_CAP_CONNS:=90}" "${H2_CAP_RAMP:=20s}" "${H2_CAP_HOLD:=60s}"
fi
ROUNDS=${ROUNDS_ARG:-$ROUNDS}
LAT_STREAMS=${LAT_STREAMS_ARG:-$LAT_STREAMS}
LAT_DUR=${LAT_DUR_ARG:-$LAT_DUR}
LAT_RATE=10
THR_SIZE=65536
HB_IDLE=1s          # sidecar heartbeat in the memory and capacity workloads
HB_SILENT_FOR=3s    # capacity: a stream silent this long (no heartbeat) is an error
HB_QUIET=15s        # elsewhere: never fires while events flow every ≤ 1 s
# The TLS workloads' idle streams start with one comment from the app: nginx over h2 sends a
# response's HEADERS only with its first body bytes (see origin.rs).
TLS_IDLE='/idle?hello=1'

has() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
secs() { # DUR -> whole seconds, rounded up
    case "$1" in
        *ms) echo $(( (${1%ms} + 999) / 1000 )) ;;
        *s) echo "${1%s}" ;;
        *m) echo $(( ${1%m} * 60 )) ;;
        *) echo 60 ;;
    esac
}

# The fd limit: two per stream per proxy; the client and origin hold one per stream each.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
log "fd limit $(ulimit -n), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- binaries -------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "cargo build --release --bins"
    # CI builds exactly the committed Cargo.lock, like the Makefile.
    cargo build --release ${CI:+--locked} --bins >&2
    if has "$TARGETS" floor; then
        log "cargo build --release --example floor_relay"
        cargo build --release ${CI:+--locked} --example floor_relay >&2
    fi
fi
BENCH=${SSE_BENCH:-$ROOT/target/release/sse-bench}
SIDECAR=${SSE_SIDECAR:-$ROOT/target/release/sse-sidecar}
FLOOR=$ROOT/target/release/examples/floor_relay
BASELINE=${SSE_SIDECAR_BASELINE:-}
[ -x "$BENCH" ] || { echo "bench.sh: $BENCH not found (build it, or set SSE_BENCH)" >&2; exit 1; }

NOTES=()
# Sidecar settings from the environment (e.g. SSE_SIDECAR_THREADS=1) change what is measured:
# the report says so.
while IFS= read -r kv; do
    NOTES+=("sidecar configured from the environment: \`$kv\`")
    log "sidecar configured from the environment: $kv"
done < <(env | grep '^SSE_SIDECAR_' | grep -v '^SSE_SIDECAR_BASELINE=' | sort)
if has "$TARGETS" sidecar && [ ! -x "$SIDECAR" ]; then
    NOTES+=("sidecar binary $SIDECAR not found: sidecar column skipped")
    log "${NOTES[-1]}"
    TARGETS=$(echo ",$TARGETS," | sed 's/,sidecar,/,/; s/^,//; s/,$//')
fi
if has "$TARGETS" baseline; then
    if [ -x "$BASELINE" ]; then
        NOTES+=("baseline: \`$BASELINE\` ($("$BASELINE" --version 2>/dev/null | head -n 1)), run interleaved with the current sidecar with the same flags")
    else
        NOTES+=("baseline binary '$BASELINE' not found (set SSE_SIDECAR_BASELINE): baseline column skipped")
        TARGETS=$(echo ",$TARGETS," | sed 's/,baseline,/,/; s/^,//; s/,$//')
    fi
    log "${NOTES[-1]}"
fi
if has "$TARGETS" redis && ! command -v redis-server >/dev/null; then
    NEED_REDIS=1
fi
if has "$TARGETS" floor && [ ! -x "$FLOOR" ]; then
    NOTES+=("floor binary $FLOOR not found (cargo build --release --example floor_relay): floor column skipped")
    log "${NOTES[-1]}"
    TARGETS=$(echo ",$TARGETS," | sed 's/,floor,/,/; s/^,//; s/,$//')
fi
command -v python3 >/dev/null || { echo "bench.sh: python3 is needed for the report" >&2; exit 1; }
need_pkgs=()
command -v curl >/dev/null || need_pkgs+=(curl)
case ",$WORKLOADS," in *,tls-*) command -v openssl >/dev/null || need_pkgs+=(openssl) ;; esac
has "$TARGETS" nginx && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] && need_pkgs+=(nginx)
has "$TARGETS" haproxy && ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ] && need_pkgs+=(haproxy)
[ "${NEED_REDIS:-0}" = 1 ] && need_pkgs+=(redis-server)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# ---- process management ---------------------------------------------------
TMP=$(mktemp -d /tmp/sse-bench.XXXXXX)
PGIDS=()
# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
    local g
    # Disowned first: bash would otherwise report each killed job ("Killed setsid ...").
    disown -a 2>/dev/null || true
    for g in "${PGIDS[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD as leader of a new process group (pid = pgid; setsid
# does not fork since a background job of a script is not a group leader).
start() {
    local name=$1; shift
    setsid "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null &
    STARTED=$!
    PGIDS+=("$STARTED")
}

# stop PGID [SIGNAL]: SIGTERM by default (a fast stop for nginx and HAProxy, which ignores
# SIGINT), SIGKILL after 5 s. The sidecar gets SIGINT: pingora's SIGTERM is the graceful
# shutdown with its grace period.
stop() {
    local g=$1 sig=${2:-TERM} _
    kill "-$sig" -- "-$g" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
    if kill -KILL -- "-$g" 2>/dev/null; then log "process group $g ignored SIG$sig for 5 s: killed"; fi
    wait "$g" 2>/dev/null || true
    local keep=() p
    for p in "${PGIDS[@]}"; do [ "$p" = "$g" ] || keep+=("$p"); done
    PGIDS=("${keep[@]}")
}

# wait_http PORT PGID [tls]: until GET /health answers (through the proxy), ≤ 10 s.
wait_http() {
    local _ url=http://127.0.0.1:$1/health tls=()
    [ "${3:-}" = tls ] && url=https://127.0.0.1:$1/health tls=(--cacert "$TLS_DIR/ca.pem")
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -sf -m 1 "${tls[@]}" -o /dev/null "$url" && return 0
        sleep 0.1
    done
    return 1
}

# make_certs DIR: a throwaway CA (ca.pem) and a certificate for 127.0.0.1 signed by it
# (cert.pem, key.pem, and both in haproxy.pem), for the TLS workloads.
make_certs() {
    local d=$1 ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    mkdir -p "$d"
    openssl req -x509 "${ec[@]}" -days 2 -subj /CN=sse-bench-ca -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    openssl req "${ec[@]}" -subj /CN=localhost -keyout "$d/key.pem" -out "$d/cert.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
    openssl x509 -req -in "$d/cert.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
        -extfile "$d/ext.cnf" -out "$d/cert.pem" 2>/dev/null
    cat "$d/cert.pem" "$d/key.pem" >"$d/haproxy.pem"
}

free_port() { "$BENCH" ports 1; }

# ---- the origin (one for the whole run) ------------------------------------
ORIGIN_PORT=$(free_port)
start origin "$BENCH" origin --listen "127.0.0.1:$ORIGIN_PORT" --fanout-interval 1s
ORIGIN_PGID=$STARTED
wait_http "$ORIGIN_PORT" "$ORIGIN_PGID" || { cat "$TMP/origin.err" >&2; echo "bench.sh: origin did not start" >&2; exit 1; }
log "origin on 127.0.0.1:$ORIGIN_PORT"
# The redis target's store: one redis-server for the run, without persistence.
if has "$TARGETS" redis; then
    REDIS_PORT=$(free_port)
    start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
    for _ in $(seq 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "bench.sh: redis-server did not start" >&2; exit 1; }
    log "redis-server on 127.0.0.1:$REDIS_PORT ($(redis-server --version | cut -d' ' -f3))"
fi
TLS_DIR=$TMP/tls
case ",$WORKLOADS," in *,tls-*) make_certs "$TLS_DIR" ;; esac

# PROTO, set per workload: how clients reach the proxies (plain, tls-h2 or tls-h1); the
# app behind them is always plain HTTP/1.1, and direct cases are always plain HTTP/1.1.
PROTO=plain

# start_target TARGET HEARTBEAT: sets PORT and PGID (empty for direct); fails if it does not come up.
# With PROTO other than plain the proxy listens with TLS only (ALPN h2 and http/1.1).
start_target() {
    local t=$1 hb=$2 dir mode='' only='/# @TLS@$/d; s/ *# @PLAIN@$//'
    # nginx and HAProxy templates: a line ending in `# @TLS@` or `# @PLAIN@` is kept only in
    # that mode.
    [ "$PROTO" = plain ] || { mode=tls; only='/# @PLAIN@$/d; s/ *# @TLS@$//'; }
    PGID=
    STOP_SIG=TERM
    case "$t" in
        direct) PORT=$ORIGIN_PORT; return 0 ;;
        sidecar|baseline|resume|redis)
            PORT=$(free_port)
            STOP_SIG=INT
            local bin=$SIDECAR conf=$TMP/$t.yaml
            [ "$t" = baseline ] && bin=$BASELINE
            # The TLS listener comes from a config file (no flag for it); a file's listen
            # replaces the default one, and --listen would replace the file's.
            local listen=(--listen "127.0.0.1:$PORT")
            : >"$conf"
            if [ "$mode" = tls ]; then
                printf 'listen:\n  - {addr: "127.0.0.1:%s", tls: {cert: "%s", key: "%s"}}\n' \
                    "$PORT" "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >>"$conf"
                listen=()
            fi
            case "$t" in
                resume) printf 'resume:\n  paths: ["/"]\n' >>"$conf" ;;
                redis) printf 'resume:\n  paths: ["/"]\n  store: redis://127.0.0.1:%s/0\n' "$REDIS_PORT" >>"$conf" ;;
            esac
            listen+=(--config "$conf")
            # RUST_LOG=warn: no per-request logging, like nginx's access_log off.
            RUST_LOG=warn start "$t" "$bin" "${listen[@]}" \
                --upstream "http://127.0.0.1:$ORIGIN_PORT" --metrics-listen off \
                --heartbeat-interval "$hb" --sse-idle-timeout 1h
            ;;
        nginx)
            PORT=$(free_port); dir=$TMP/nginx; rm -rf "$dir"; mkdir -p "$dir"
            sed -e "s|@DIR@|$dir|g; s|@PORT@|$PORT|g; s|@ORIGIN_PORT@|$ORIGIN_PORT|g; s|@WORKERS@|$(nproc)|g" \
                -e "s|@TLS_DIR@|$TLS_DIR|g" -e "$only" \
                bench/nginx.conf.in >"$dir/nginx.conf"
            start nginx "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
            ;;
        floor)
            PORT=$(free_port)
            start floor "$FLOOR" "$PORT" "$ORIGIN_PORT" "$(nproc)"
            ;;
        haproxy)
            PORT=$(free_port); dir=$TMP/haproxy; mkdir -p "$dir"
            sed -e "s|@PORT@|$PORT|g; s|@ORIGIN_PORT@|$ORIGIN_PORT|g; s|@THREADS@|$(nproc)|g" \
                -e "s|@TLS_DIR@|$TLS_DIR|g" -e "$only" \
                bench/haproxy.cfg.in >"$dir/haproxy.cfg"
            start haproxy "$HAPROXY" -db -f "$dir/haproxy.cfg"
            ;;
    esac
    PGID=$STARTED
    if ! wait_http "$PORT" "$PGID" "$mode"; then
        log "$t did not start: $(tail -n 3 "$TMP/$t.err" 2>/dev/null | tr '\n' ' ')"
        stop "$PGID" "$STOP_SIG"
        return 1
    fi
    # Let every worker finish starting up before the client samples "idle" RSS; the redis
    # target's first ping (once a second) must have found the store, or its streams would
    # go without resume.
    sleep "$SETTLE"
    [ "$t" = redis ] && sleep 1.2
    return 0
}

# ---- cases ----------------------------------------------------------------
CASES=$TMP/cases.tsv
: >"$CASES"

# run_case WORKLOAD TARGET HEARTBEAT STREAMS PATH RAMP DURATION [client args...]
# Appends "workload target status json-file load1 round" to cases.tsv (ROUND is global).
run_case() {
    local wl=$1 t=$2 hb=$3 n=$4 path=$5 ramp=$6 dur=$7; shift 7
    local tag="$wl-$t-$n-r$ROUND" json watch=() scheme=http proto=()
    json=$TMP/$tag.json
    if [ "$PROTO" != plain ] && [ "$t" != direct ]; then
        scheme=https proto=(--cacert "$TLS_DIR/ca.pem")
        [ "$PROTO" = tls-h2 ] && proto+=(--h2 --connections "$CONNS")
    fi
    if ! start_target "$t" "$hb"; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$t" start-failed - "$(cut -d' ' -f1 /proc/loadavg)" "$ROUND" >>"$CASES"
        return 1
    fi
    [ -n "$PGID" ] && watch=(--watch-pgid "$PGID")
    log "$wl (round $ROUND/${rounds:-$ROUNDS}): $t, $n streams, $scheme $path${proto[*]:+ (${proto[*]})}, ramp $ramp, $dur"
    local limit=$(( $(secs "$ramp") + $(secs "$dur") + 60 )) rc=0
    timeout -k 5 "$limit" "$BENCH" client --url "$scheme://127.0.0.1:$PORT$path" "${proto[@]}" \
        --streams "$n" --ramp "$ramp" --duration "$dur" --json "${watch[@]}" "$@" \
        >"$json" 2>"$TMP/$tag.client.err" || rc=$?
    [ -n "$PGID" ] && stop "$PGID" "$STOP_SIG"
    if [ $rc -ne 0 ] || [ ! -s "$json" ]; then
        log "client failed (exit $rc): $(tail -n 3 "$TMP/$tag.client.err" | tr '\n' ' ')"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$t" client-failed - "$(cut -d' ' -f1 /proc/loadavg)" "$ROUND" >>"$CASES"
        return 1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$t" ok "$json" "$(cut -d' ' -f1 /proc/loadavg)" "$ROUND" >>"$CASES"
    python3 - "$json" >&2 <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l, p = r["latency_us"], r["proxy"] or {}
print(f"    held {r['held']}/{r['streams']}, failures {r['failures_total']} {r['failure_samples'][:2]}, "
      f"events {r['events_window']} ({r['events_per_s']}/s), comments {r['comments_window']}, "
      f"{r['mib_per_s']} MiB/s, p50/p99 {l['p50']}/{l['p99']} µs, "
      f"cpu {p.get('cpu_s_window')} s, rss {p.get('rss_idle_kib')}->{p.get('rss_loaded_kib')} KiB")
EOF
}

# held_clean JSON STREAMS: the case held every stream with no failure.
held_clean() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["failures_total"]==0 and r["held"]==int(sys.argv[2]) else 1)' "$1" "$2"
}
held_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["held"])' "$1"; }

# capacity_search WORKLOAD TARGET MAX RAMP HOLD PATH: tries MAX streams; on errors retries at what
# was held (rounded down to 500), ≤ CAP_TRIES runs. The sidecar's streams must see a heartbeat
# every HB_SILENT_FOR.
capacity_search() {
    local wl=$1 t=$2 n=$3 ramp=$4 hold=$5 path=$6 idle=() try h next
    case "$t" in sidecar | baseline | resume | redis) idle=(--idle-timeout "$HB_SILENT_FOR") ;; esac
    for try in $(seq "$CAP_TRIES"); do
        run_case "$wl" "$t" "$HB_IDLE" "$n" "$path" "$ramp" "$hold" \
            --align 0s --ready-timeout 20s "${idle[@]}" || break
        json=$TMP/$wl-$t-$n-r$ROUND.json
        held_clean "$json" "$n" && break
        [ "$try" = "$CAP_TRIES" ] && break
        h=$(held_of "$json")
        next=$(( h / 500 * 500 ))
        [ "$next" -ge "$n" ] && next=$(( n - 500 ))
        [ "$next" -lt 500 ] && break
        n=$next
    done
}

IFS=, read -r -a TLIST <<<"$TARGETS"
ROUND=1
for wl in latency fanout memory capacity throughput tls-h2-latency tls-h2-memory tls-h1-memory tls-h2-capacity; do
    has "$WORKLOADS" "$wl" || continue
    rounds=$ROUNDS
    # ~85 s per target and try: once
    case "$wl" in *capacity) rounds=1 ;; esac
    case "$wl" in
        tls-h2-*) PROTO='tls-h2' ;;
        tls-h1-*) PROTO='tls-h1' ;;
        *) PROTO=plain ;;
    esac
    for ROUND in $(seq "$rounds"); do
        # Rotate the target order each round so no target always runs first (or right after another).
        order=()
        for i in "${!TLIST[@]}"; do order+=("${TLIST[$(( (i + ROUND - 1) % ${#TLIST[@]} ))]}"); done
        for t in "${order[@]}"; do
            # Only the latency workloads have a direct case: nothing else measures the origin.
            case "$wl" in *latency) ;; *) [ "$t" = direct ] && continue ;; esac
            case "$wl" in
                latency)
                    run_case latency "$t" "$HB_QUIET" "$LAT_STREAMS" "/stream?rate=$LAT_RATE" \
                        "$LAT_RAMP" "$LAT_DUR" --align 0s || true ;;
                fanout)
                    run_case fanout "$t" "$HB_QUIET" "$FAN_STREAMS" /ticker "$FAN_RAMP" "$FAN_DUR" || true ;;
                memory)
                    run_case memory "$t" "$HB_IDLE" "$MEM_STREAMS" /idle "$MEM_RAMP" "$MEM_DUR" --align 0s || true ;;
                capacity)
                    capacity_search capacity "$t" "$CAP_MAX" "$CAP_RAMP" "$CAP_HOLD" /idle ;;
                throughput)
                    run_case throughput "$t" "$HB_QUIET" 1 "/bulk?size=$THR_SIZE" 0s "$THR_DUR" \
                        --align 0s --read-buf 65536 || true ;;
                tls-h2-latency)
                    CONNS=$H2_LAT_CONNS run_case "$wl" "$t" "$HB_IDLE" "$H2_LAT_STREAMS" "/stream?rate=$LAT_RATE" \
                        "$H2_LAT_RAMP" "$H2_LAT_DUR" --align 0s || true ;;
                tls-h2-memory)
                    CONNS=$H2_MEM_CONNS run_case "$wl" "$t" "$HB_IDLE" "$H2_MEM_STREAMS" "$TLS_IDLE" \
                        "$H2_MEM_RAMP" "$H2_MEM_DUR" --align 0s || true ;;
                tls-h1-memory)
                    run_case "$wl" "$t" "$HB_IDLE" "$H1_MEM_STREAMS" "$TLS_IDLE" "$H1_MEM_RAMP" "$H1_MEM_DUR" \
                        --align 0s || true ;;
                tls-h2-capacity)
                    CONNS=$H2_CAP_CONNS capacity_search "$wl" "$t" "$H2_CAP_MAX" "$H2_CAP_RAMP" "$H2_CAP_HOLD" "$TLS_IDLE" ;;
            esac
        done
    done
done

# ---- report ---------------------------------------------------------------
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
if [ -z "$OUT" ]; then
    if [ "$SMOKE" = 1 ]; then OUT=$TMP/results; else OUT=$ROOT/bench/results; fi
fi
mkdir -p "$OUT"
META=$TMP/meta.json
python3 - "$META" <<EOF
import json, platform, subprocess, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception: return ""
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
json.dump({
    "date": "$STAMP", "smoke": $SMOKE == 1, "cores": $(nproc), "cpu": cpu,
    "kernel": platform.release(), "loadavg_end": sh("cat /proc/loadavg"),
    "git": sh("git -C '$ROOT' rev-parse --short HEAD 2>/dev/null"),
    "nginx": sh("'$NGINX' -v 2>&1"), "haproxy": sh("'$HAPROXY' -v 2>&1 | head -1"),
    "rounds": $ROUNDS,
    "notes": [n for n in """$(printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}")""".splitlines() if n],
    "params": {"latency": "$LAT_STREAMS streams x $LAT_RATE ev/s, $LAT_DUR", "fanout": "$FAN_STREAMS streams, 1s ticker, $FAN_DUR",
               "memory": "$MEM_STREAMS idle streams, $MEM_DUR", "capacity": "<= $CAP_MAX streams held $CAP_HOLD",
               "throughput": "1 stream, $THR_SIZE-byte events, $THR_DUR",
               "tls-h2-latency": "$H2_LAT_STREAMS streams over $H2_LAT_CONNS TLS+h2 connections x $LAT_RATE ev/s, $H2_LAT_DUR",
               "tls-h2-memory": "$H2_MEM_STREAMS idle streams over $H2_MEM_CONNS TLS+h2 connections, $H2_MEM_DUR",
               "tls-h1-memory": "$H1_MEM_STREAMS idle TLS HTTP/1.1 streams, one per connection, $H1_MEM_DUR",
               "tls-h2-capacity": "<= $H2_CAP_MAX streams over $H2_CAP_CONNS TLS+h2 connections held $H2_CAP_HOLD"},
}, open(sys.argv[1], "w"))
EOF
rc=0
smoke_flag=()
[ "$SMOKE" = 1 ] && smoke_flag=(--smoke)
python3 bench/report.py --cases "$CASES" --meta "$META" --md "$OUT/$STAMP.md" --json "$OUT/$STAMP.json" \
    "${smoke_flag[@]}" || rc=$?
if [ "$OUT" = "$TMP/results" ] && [ "${BENCH_KEEP:-0}" != 1 ]; then
    log "smoke: results not kept (--out DIR or BENCH_KEEP=1 keeps them)"
else
    log "wrote $OUT/$STAMP.md and $OUT/$STAMP.json"
fi
exit $rc

#!/usr/bin/env bash
# Performs the Dockerfile's build and runtime steps without a Docker engine.
#
#   scripts/docker-mirror.sh
#
# 1. The build context: files not excluded by .dockerignore. Every COPY source of
#    the Dockerfile must be in it; the builder's COPYs are copied into a scratch
#    build dir (target/docker-mirror/build), so a file the build needs but the
#    Dockerfile forgets to COPY fails here as it would in `docker build`.
# 2. The builder's step, in that dir: `cargo build --release --locked --bin
#    sse-sidecar`, then install + strip --strip-debug. The target dir is the
#    repository's, so only this crate is recompiled, not its dependencies. The
#    demo stage likewise.
# 3. The runtime layout in a scratch root: /usr/local/bin/sse-sidecar and
#    /etc/sse-sidecar/sse-sidecar.yaml; the binary may link only libraries that
#    debian:bookworm-slim has.
# 4. As the image's non-root user (uid 10001, via setpriv, which needs no passwd entry):
#    `sse-sidecar --version`, `sse-sidecar check --config <copied conf>`, then the
#    image's ENTRYPOINT + CMD on loopback ports in front of the demo origin (as
#    docker-compose.yml runs them): /healthz answers and an event streams through.
# 5. examples/docker-compose.yml names existing Dockerfile stages and files.
# Finally it prints the binary's size and the expected image size.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
MIRROR="$REPO/target/docker-mirror"
RUN_UID=10001 # the Dockerfile's USER
DEMO_UID=65534 # the demo stage's USER
SLIM_MB=75 # debian:bookworm-slim, uncompressed, amd64 (docker images: ~74.8 MB)

say() { echo "docker-mirror: $*"; }
die() { echo "docker-mirror: FAIL: $*" >&2; exit 1; }

# The Dockerfile lines this script mirrors. If one changes, change this script too.
# shellcheck disable=SC1003 # the trailing backslashes are the Dockerfile's own
for line in \
    'FROM rust:1-bookworm AS builder' \
    'WORKDIR /build' \
    '    cargo build --release --locked --bin sse-sidecar \' \
    ' && install -D -m 0755 target/release/sse-sidecar /out/sse-sidecar \' \
    ' && strip --strip-debug /out/sse-sidecar' \
    '    cargo build --release --locked --example demo_origin \' \
    'FROM debian:bookworm-slim AS runtime' \
    'COPY --from=builder /out/sse-sidecar /usr/local/bin/sse-sidecar' \
    'COPY --from=builder /build/conf/sse-sidecar.yaml /etc/sse-sidecar/sse-sidecar.yaml' \
    "USER $RUN_UID:$RUN_UID" \
    'ENTRYPOINT ["/usr/local/bin/sse-sidecar"]' \
    'CMD ["--config", "/etc/sse-sidecar/sse-sidecar.yaml"]' \
    "USER $DEMO_UID:$DEMO_UID"; do
    grep -qxF -- "$line" Dockerfile || die "Dockerfile no longer has the line '$line': update this script with it"
done
[ "$(grep -E '^FROM ' Dockerfile | tail -1)" = 'FROM debian:bookworm-slim AS runtime' ] ||
    die "the runtime stage must stay the Dockerfile's last (default) stage"

# --- 1. context and COPY sources ---------------------------------------------------
rm -rf "$MIRROR"
mkdir -p "$MIRROR/build"
scripts/py-tools.sh python - "$MIRROR/build" <<'EOF'
import json, os, re, shutil, sys

build = sys.argv[1]

def ignore_patterns():
    pats = []
    for line in open(".dockerignore"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").strip("/"))
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**", i):
                rx += ".*"; i += 2
            elif pat[i] == "*":
                rx += "[^/]*"; i += 1
            elif pat[i] == "?":
                rx += "[^/]"; i += 1
            else:
                rx += re.escape(pat[i]); i += 1
        pats.append((neg, re.compile(rx)))
    return pats

PATS = ignore_patterns()

def ignored(rel):
    # Docker: the last matching pattern wins; a pattern also matches a path's parents.
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for neg, rx in PATS:
        if any(rx.fullmatch(p) for p in prefixes):
            result = not neg
    return result

for big in ("target", ".git"):
    if os.path.exists(big) and not ignored(big + "/x"):
        sys.exit(f"docker-mirror: FAIL: .dockerignore lets {big}/ into the build context")

context = set()
for root, dirs, files in os.walk("."):
    dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(root, d)) not in ("target", ".git")]
    for f in files:
        rel = os.path.normpath(os.path.join(root, f))
        if not ignored(rel):
            context.add(rel)

# Instructions, with continuation lines joined and comments dropped.
instrs, cur = [], ""
for raw in open("Dockerfile"):
    line = raw.rstrip("\n")
    if not cur and line.lstrip().startswith("#"):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    cur += line
    if cur.strip():
        instrs.append(cur.strip())
    cur = ""

stage, workdir, missing, copied = None, "/", [], 0
for ins in instrs:
    op, _, rest = ins.partition(" ")
    op = op.upper()
    if op == "FROM":
        stage = rest.split()[-1] if " AS " in rest.upper() else rest
    elif op == "WORKDIR":
        workdir = os.path.join(workdir, rest.strip())
    elif op in ("COPY", "ADD"):
        args = json.loads(rest) if rest.lstrip().startswith("[") else rest.split()
        flags = [a for a in args if a.startswith("--")]
        paths = [a for a in args if not a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        *srcs, dest = paths
        for src in srcs:
            src = os.path.normpath(src)
            files = sorted(p for p in context if p == src or p.startswith(src + "/"))
            if not files:
                missing.append(f"{stage}: COPY {src} (absent, or excluded by .dockerignore)")
                continue
            # Only the /build stages are mirrored: they are what cargo sees.
            if workdir != "/build":
                continue
            dest_dir = os.path.join(build, os.path.relpath(os.path.join(workdir, dest), "/build"))
            for f in files:
                if f == src:  # a file: dest is a dir ("./") or a file name
                    target = os.path.join(dest_dir, os.path.basename(f)) if dest.endswith("/") else dest_dir
                else:
                    target = os.path.join(dest_dir, os.path.relpath(f, src))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(f, target)
                copied += 1
if missing:
    sys.exit("docker-mirror: FAIL: COPY sources missing from the build context:\n  " + "\n  ".join(missing))
print(f"docker-mirror: context has {len(context)} files; every COPY source present; {copied} copied to the build dir")
EOF

# --- 2. the builder stages ---------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
(cd "$MIRROR/build" && cargo build --release --locked --quiet --bin sse-sidecar) || die "cargo build --release --locked failed in the build context"
install -D -m 0755 "$CARGO_TARGET_DIR/release/sse-sidecar" "$MIRROR/out/sse-sidecar"
strip --strip-debug "$MIRROR/out/sse-sidecar"
(cd "$MIRROR/build" && cargo build --release --locked --quiet --example demo_origin) ||
    die "the demo stage's cargo build failed in the build context"
install -D -m 0755 "$CARGO_TARGET_DIR/release/examples/demo_origin" "$MIRROR/out/demo_origin"
strip --strip-debug "$MIRROR/out/demo_origin"
say "locked release build from the build context: ok"

# --- 3. the runtime layout ---------------------------------------------------------
ROOT="$MIRROR/root"
install -D -m 0755 "$MIRROR/out/sse-sidecar" "$ROOT/usr/local/bin/sse-sidecar"
install -D -m 0644 "$MIRROR/build/conf/sse-sidecar.yaml" "$ROOT/etc/sse-sidecar/sse-sidecar.yaml"
install -D -m 0755 "$MIRROR/out/demo_origin" "$ROOT/demo/usr/local/bin/demo_origin"
chmod -R a+rX "$MIRROR"
BIN="$ROOT/usr/local/bin/sse-sidecar"
CONF="$ROOT/etc/sse-sidecar/sse-sidecar.yaml"
# libc6 and libgcc-s1 are what bookworm-slim has; anything else (libssl, libz) would
# need an apt-get install in the runtime stage.
for lib in $(readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case "$lib" in
        libc.so.6 | libm.so.6 | libgcc_s.so.1 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libutil.so.1 | ld-linux-*.so.*) ;;
        *) die "the binary needs $lib, which debian:bookworm-slim does not have" ;;
    esac
done
say "runtime layout in $ROOT; linked libraries all in bookworm-slim"

# --- 4. run as the image's user ----------------------------------------------------
# setpriv needs no passwd entry for the uid, and it execs the command, so $! of a
# backgrounded "${AS[@]}" CMD & is the program itself, which SIGTERM must reach.
command -v setpriv >/dev/null || die "need setpriv (util-linux) to run as the image's users"
as_uid() { AS=(setpriv --reuid="$1" --regid="$1" --clear-groups --); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

as_uid "$RUN_UID"
"${AS[@]}" "$BIN" --version
"${AS[@]}" "$BIN" check --config "$CONF"
say "--version and check --config /etc/sse-sidecar/sse-sidecar.yaml as uid $RUN_UID: ok"

P_APP="$(free_port)" P_HTTP="$(free_port)" P_ADMIN="$(free_port)"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
as_uid "$DEMO_UID"
"${AS[@]}" "$ROOT/demo/usr/local/bin/demo_origin" --listen "127.0.0.1:$P_APP" >"$MIRROR/demo.log" 2>&1 &
pids+=($!)
# ENTRYPOINT + CMD as the image runs them; the environment overrides the ports and
# the upstream, as docker run -e would.
as_uid "$RUN_UID"
SSE_SIDECAR_LISTEN="127.0.0.1:$P_HTTP" SSE_SIDECAR_METRICS_LISTEN="127.0.0.1:$P_ADMIN" \
    SSE_SIDECAR_UPSTREAM="http://127.0.0.1:$P_APP" \
    "${AS[@]}" "$BIN" --config "$CONF" >"$MIRROR/sidecar.log" 2>&1 &
sidecar=$!
pids+=("$sidecar")

healthy=
for _ in $(seq 100); do # 10 s
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$P_ADMIN/healthz" 2>/dev/null; then
        healthy=1
        break
    fi
    kill -0 "$sidecar" 2>/dev/null || break
    sleep 0.1
done
[ -n "$healthy" ] || { cat "$MIRROR/sidecar.log" >&2; die "no 200 from /healthz on the admin port within 10 s"; }
[ "$(ps -o uid= -p "$sidecar" | tr -d ' ')" = "$RUN_UID" ] || die "the sidecar is not running as uid $RUN_UID"
say "the image's ENTRYPOINT + CMD runs as uid $RUN_UID; /healthz: 200"

events="$(curl -sN --max-time 2.5 -H 'Accept: text/event-stream' "http://127.0.0.1:$P_HTTP/events" || true)"
grep -q '^id: 1$' <<<"$events" || {
    printf '%s\n' "$events" >&2
    cat "$MIRROR/sidecar.log" >&2
    die "no event from the demo origin through the sidecar"
}
say "an event from the demo stage streamed through the sidecar: ok"

# SIGTERM is how Docker and Kubernetes stop it. With no open streams it should be
# gone well within the drain window.
kill -TERM "$sidecar"
stopped=
for _ in $(seq 150); do # 15 s
    if ! kill -0 "$sidecar" 2>/dev/null; then
        stopped=1
        break
    fi
    sleep 0.1
done
if [ -n "$stopped" ]; then
    say "SIGTERM with no open streams: exited"
else
    say "WARNING: still running 15 s after SIGTERM with no open streams; Kubernetes would SIGKILL it"
fi

# --- 5. docker-compose.yml ---------------------------------------------------------
scripts/py-tools.sh python - <<'EOF'
import os, re, yaml
stages = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", open("Dockerfile").read()))
base = yaml.safe_load(open("examples/docker-compose.yml"))["services"]
# The Redis variant is an override file: its services extend the base file's.
for path in ["examples/docker-compose.yml", "examples/docker-compose.redis.yml"]:
    compose = yaml.safe_load(open(path))
    for name, svc in compose["services"].items():
        assert name in base or "image" in svc or "build" in svc, f"{path}: service {name} has no image"
        target = svc.get("build", {}).get("target")
        assert target is None or target in stages, f"{path}: service {name}: no Dockerfile stage {target}"
        for vol in svc.get("volumes", []):
            src = os.path.join("examples", vol.split(":")[0])
            assert os.path.exists(src), f"{path}: service {name}: {src} does not exist"
        for dep in svc.get("depends_on", []):
            assert dep in base or dep in compose["services"], f"{path}: {name} depends on unknown {dep}"
yaml.safe_load(open("examples/prometheus/prometheus.yml"))
print("docker-mirror: docker-compose.yml (+ docker-compose.redis.yml): stages and mounted files exist")
EOF

# --- size ----------------------------------------------------------------------------
raw=$(stat -c %s "$CARGO_TARGET_DIR/release/sse-sidecar")
stripped=$(stat -c %s "$MIRROR/out/sse-sidecar")
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }
say "binary: $(mb "$raw") MB as built, $(mb "$stripped") MB after strip --strip-debug"
say "expected image size: ~$(awk -v s="$SLIM_MB" -v b="$stripped" 'BEGIN { printf "%.0f", s + b / 1000000 }') MB (debian:bookworm-slim ~${SLIM_MB} MB + binary + config)"

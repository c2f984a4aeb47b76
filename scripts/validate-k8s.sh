#!/usr/bin/env bash
# Validates the manifests in examples/kubernetes/.
#
#   scripts/validate-k8s.sh                # everything below
#   scripts/validate-k8s.sh --config-only  # only step 3 (used by `make check-config`)
#
# 1. Every manifest against the Kubernetes JSON schemas shipped in the PyPI package
#    kubernetes-validate (offline), strict: unknown fields are errors.
# 2. Cross-checks no schema can make: the Service and ServiceMonitor select the
#    Deployments' pods and name ports that exist; probes hit the admin port; the
#    termination grace period covers preStop + the ConfigMap's drain window (and its
#    hand-off timeout with a Redis resume store); the app serves until the sidecar has
#    drained; a native sidecar drains from its preStop with `sse-sidecar drain --wait`.
# 3. The ConfigMap's sse-sidecar.yaml, extracted to a file, passes `sse-sidecar check`.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1.33: native sidecars (init containers with restartPolicy: Always) are GA there.
K8S_VERSION=1.33.0
BIN="${SSE_SIDECAR_BIN:-${CARGO_TARGET_DIR:-target}/release/sse-sidecar}"
DIR=examples/kubernetes
PY=(scripts/py-tools.sh python)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Step 3's extraction is needed in both modes.
"${PY[@]}" - "$DIR/configmap.yaml" "$tmp/sse-sidecar.yaml" <<'EOF'
import sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
assert cm["kind"] == "ConfigMap", "configmap.yaml holds no ConfigMap"
open(sys.argv[2], "w").write(cm["data"]["sse-sidecar.yaml"])
EOF

if [ "${1:-}" != "--config-only" ]; then
    # Custom resources have no schema in kubernetes-validate: they get step 2 only.
    mapfile -t core < <(grep -L '^apiVersion: monitoring.coreos.com/' "$DIR"/*.yaml)
    scripts/py-tools.sh kubernetes-validate --strict --quiet -k "$K8S_VERSION" "${core[@]}"
    echo "validate-k8s: ${#core[@]} manifests match the Kubernetes $K8S_VERSION schemas"

    "${PY[@]}" - "$DIR" "$tmp/sse-sidecar.yaml" <<'EOF'
import glob, re, sys, yaml

kdir, conf_path = sys.argv[1], sys.argv[2]
docs = {}
for path in sorted(glob.glob(f"{kdir}/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            docs.setdefault(doc["kind"], []).append((path, doc))
problems = []
def check(ok, msg):
    if not ok:
        problems.append(msg)

def seconds(d):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(d))
    assert m, f"unparsable duration {d!r}"
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]

conf = yaml.safe_load(open(conf_path))
drain = seconds(conf.get("shutdown", {}).get("drain_window", "10s"))
# With a Redis store, a draining sidecar relays resumable streams for this much longer.
store = str(conf.get("resume", {}).get("store", "memory"))
handoff = (seconds(conf.get("shutdown", {}).get("handoff_timeout", "2m"))
           if store.startswith(("redis://", "rediss://")) else 0)
admin_port = int(str(conf.get("metrics_listen", "0.0.0.0:9090")).rsplit(":", 1)[1])
listen_port = int(str(conf.get("listen", ["0.0.0.0:8080"])[0]).rsplit(":", 1)[1])

def prestop(c):
    """Seconds the preStop hook sleeps before anything else."""
    hook = c.get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        return hook["sleep"]["seconds"]
    cmd = hook.get("exec", {}).get("command", [])
    if cmd[:1] == ["sleep"]:
        return int(cmd[1])
    m = re.match(r"sleep (\d+)", cmd[2]) if cmd[:2] == ["/bin/sh", "-c"] else None
    return int(m[1]) if m else 0

def drain_command(c):
    """The --timeout (s) of an `sse-sidecar drain --wait` in the preStop hook, or None."""
    cmd = " ".join(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
    m = re.search(r"sse-sidecar drain --wait --timeout (\S+)", cmd)
    return seconds(m[1]) if m else None

def has_sidecar(dep):
    spec = dep["spec"]["template"]["spec"]
    return any(c["name"] == "sse-sidecar" for c in spec.get("initContainers", []) + spec["containers"])

# The app's Service (redis.yaml brings another).
svc_path, svc = next((p, s) for p, s in docs["Service"] if s["metadata"]["name"] != "sse-redis")
for path, dep in [(p, d) for p, d in docs["Deployment"] if has_sidecar(d)]:
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(),
          f"{path}: selector does not match the pod labels")
    check(svc["spec"]["selector"].items() <= labels.items(),
          f"{svc_path}: selector does not match the pods of {path}")
    ann = pod["metadata"].get("annotations", {})
    check(ann.get("prometheus.io/port") == str(admin_port), f"{path}: prometheus.io/port != {admin_port}")
    spec = pod["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    sidecars = [c for c in containers if c["name"] == "sse-sidecar"]
    check(len(sidecars) == 1, f"{path}: expected one sse-sidecar container")
    sc = sidecars[0]
    if sc in spec.get("initContainers", []):
        check(sc.get("restartPolicy") == "Always", f"{path}: a native sidecar needs restartPolicy: Always")
    ports = {p["name"]: p["containerPort"] for p in sc["ports"]}
    check(ports.get("http") == listen_port, f"{path}: port http != listen port {listen_port}")
    check(ports.get("metrics") == admin_port, f"{path}: port metrics != metrics_listen port {admin_port}")
    for sp in svc["spec"]["ports"]:
        check(sp["targetPort"] in ports, f"{svc_path}: targetPort {sp['targetPort']} not a port of {path}")
    for probe, want in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = sc.get(probe, {}).get("httpGet", {})
        check(get.get("path") == want and get.get("port") in ("metrics", admin_port),
              f"{path}: {probe} should GET {want} on the admin port")
    check("/etc/sse-sidecar" in [m["mountPath"] for m in sc.get("volumeMounts", [])],
          f"{path}: the ConfigMap is not mounted at /etc/sse-sidecar")
    # The sidecar must be able to finish its drain (and hand-offs) before the grace
    # period runs out, and the app must serve until then. A classic sidecar drains on
    # SIGTERM, after its preStop; a native one is signalled only after the app exited,
    # so it drains from its preStop hook.
    app_prestop = max(prestop(c) for c in spec["containers"] if c is not sc)
    drained = prestop(sc) + drain + handoff
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if sc in spec.get("initContainers", []):
        timeout = drain_command(sc)
        check(timeout is not None, f"{path}: a native sidecar must drain from its preStop "
              "(`sse-sidecar drain --wait --timeout DUR`): its SIGTERM comes after the app exited")
        timeout = timeout or 0
        check(timeout >= 2 * drain + handoff + 1, f"{path}: drain --timeout {timeout:g}s < "
              f"2 × drain_window + handoff_timeout + 1 s ({2 * drain + handoff + 1:g}s)")
        need = max(app_prestop, prestop(sc) + timeout) + 5
    else:
        need = max(drained, app_prestop) + 5
    check(app_prestop >= drained, f"{path}: the app's preStop ({app_prestop}s) ends before the "
          f"sidecar has drained (preStop + drain_window + handoff_timeout = {drained:g}s)")
    check(grace >= need, f"{path}: terminationGracePeriodSeconds {grace} < {need:g} "
          f"(preStop hooks + drain + 5 s margin)")

svc_ports = {p["name"] for p in svc["spec"]["ports"]}
for path, sm in docs.get("ServiceMonitor", []):
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", f"{path}: unexpected apiVersion")
    check(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
          f"{path}: selector does not match the Service's labels")
    for ep in sm["spec"]["endpoints"]:
        check(ep["port"] in svc_ports, f"{path}: port {ep['port']} is not a named Service port")

for p in problems:
    print(f"validate-k8s: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"validate-k8s: cross-checks passed ({sum(map(len, docs.values()))} resources)")
EOF
fi

if [ ! -x "$BIN" ]; then
    echo "validate-k8s: $BIN not built (cargo build --release)" >&2
    exit 1
fi
"$BIN" check --config "$tmp/sse-sidecar.yaml"
echo "validate-k8s: the ConfigMap's sse-sidecar.yaml passes sse-sidecar check"

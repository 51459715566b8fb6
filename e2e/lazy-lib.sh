# Used by e2e/pod-start-bench (sourced, after the proving ground's env is
# loaded and NS / WORK are set): Pods on the node, what the soci-snapshotter and the registry did
# for them, and forgetting an image on the node so the next run pulls it again.
# The registry, containerd and snapshotter facts come from ../shared/proving-ground.md.

CRANE=(crane --insecure)
CRICTL=(crictl -r "unix://$SOCI_PG_CONTAINERD_ADDRESS")
CTR=(ctr --address "$SOCI_PG_CONTAINERD_ADDRESS" -n k8s.io)
REGISTRY_LOG=$SOCI_PG_DIR/logs/registry.log

# Python helpers: registry reads, snapshotter-log and registry-log parsing.
LAZY_PY=$WORK/lazy.py
cat >"$LAZY_PY" <<'PY'
import hashlib, json, re, sys, urllib.request

SOCI_INDEX_DIGEST = "com.amazon.soci.index-digest"
LAYER_DIGEST = "com.amazon.soci.image-layer-digest"
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])

def split_ref(ref):
    host, _, rest = ref.partition("/")
    if "@" in rest:
        repo, _, reference = rest.partition("@")
        repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
    else:
        repo, _, reference = rest.rpartition(":")
    return host, repo, reference

def get(host, path, accept=ACCEPT):
    req = urllib.request.Request(f"http://{host}/v2/{path}", headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        return r.read()

def chain_ids(diff_ids):
    out = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out

def layers(ref, arch="amd64"):
    """The image manifest the node runs (linux/ARCH), its layers with chain ids, and which of
    them the bound SOCI index (manifest annotation) has a zTOC for."""
    host, repo, reference = split_ref(ref)
    doc = json.loads(get(host, f"{repo}/manifests/{reference}"))
    manifest_digest = reference
    if "manifests" in doc:
        entries = [m for m in doc["manifests"]
                   if not m.get("artifactType", "").startswith("application/vnd.amazon.soci")
                   and "com.amazon.soci.image-manifest-digest" not in m.get("annotations", {})
                   and m.get("platform", {}).get("os") == "linux"
                   and m.get("platform", {}).get("architecture") == arch]
        if not entries:
            sys.exit(f"{ref}: no linux/{arch} manifest")
        manifest_digest = entries[0]["digest"]
        doc = json.loads(get(host, f"{repo}/manifests/{manifest_digest}"))
    config = json.loads(get(host, f"{repo}/blobs/{doc['config']['digest']}", "*/*"))
    chains = chain_ids(config["rootfs"]["diff_ids"])
    index_digest = doc.get("annotations", {}).get(SOCI_INDEX_DIGEST)
    ztoc_layers, ztocs = set(), []
    if index_digest:
        index = json.loads(get(host, f"{repo}/manifests/{index_digest}"))
        ztoc_layers = {l.get("annotations", {}).get(LAYER_DIGEST) for l in index["layers"]}
        ztocs = [l["digest"] for l in index["layers"]]
    return {"repo": repo, "manifest": manifest_digest, "sociIndex": index_digest, "ztocs": ztocs,
            "layers": [{"digest": l["digest"], "size": l["size"], "mediaType": l["mediaType"],
                        "chain": c, "indexed": l["digest"] in ztoc_layers}
                       for l, c in zip(doc["layers"], chains)]}

def observe(image_json, soci_log, registry_log, mounts_file):
    """Per layer: what the snapshotter logged for its snapshot (by chain id), whether a FUSE
    mount is present at the remote snapshot's mount point, and how its blob was fetched."""
    image = json.load(open(image_json))
    entries = []
    for line in open(soci_log, errors="replace"):
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass
    fuse = set()
    for line in open(mounts_file):
        f = line.split()
        if len(f) > 2 and f[2] == "fuse.rawBridge":
            fuse.add(f[1])
    gets = parse_registry(registry_log)
    out = []
    for l in image["layers"]:
        mine = [e for e in entries if str(e.get("key", "")).endswith(" " + l["chain"])]
        msgs = [e.get("msg", "") for e in mine]
        mountpoint = next((e.get("mountpoint") for e in mine if e.get("mountpoint")), None)
        # Why a remote mount failed, other than "this layer has no zTOC" (a sparse index).
        errors = sorted({str(e.get("error")) for e in mine
                         if e.get("msg") == "failed to prepare remote snapshot" and e.get("error")
                         and "no ztoc for layer" not in str(e.get("error"))})
        blob = [g for g in gets if g["uri"] == f"/v2/{image['repo']}/blobs/{l['digest']}"]
        out.append({
            "digest": l["digest"], "chain": l["chain"], "indexed": l["indexed"], "size": l["size"],
            "remote": "remote snapshot successfully prepared." in msgs,
            "local": "local snapshot successfully prepared" in msgs,
            "deferred": any("deferring to container runtime" in m for m in msgs),
            "prepared": bool(mine), "mountpoint": mountpoint,
            "fuse": bool(mountpoint) and mountpoint in fuse,
            "remoteErrors": errors,
            "fullGets": sum(1 for g in blob if g["status"] == 200 and g["written"] >= l["size"]),
            "rangeGets": sum(1 for g in blob if g["status"] == 206),
            "bytesFetched": sum(g["written"] for g in blob),
        })
    print(json.dumps({"manifest": image["manifest"], "layers": out}))

LINE = re.compile(r'msg="response completed".*http\.request\.method=(\w+).*http\.request\.uri="?([^" ]+)"?.*'
                  r'http\.response\.status=(\d+) http\.response\.written=(\d+)')

def parse_registry(path):
    out = []
    for line in open(path, errors="replace"):
        m = LINE.search(line)
        if m and m.group(1) == "GET":
            out.append({"uri": m.group(2), "status": int(m.group(3)), "written": int(m.group(4))})
    return out

def fetched(registry_log, repo):
    """Bytes the registry sent for REPO (manifests and blobs) in this log slice."""
    gets = [g for g in parse_registry(registry_log) if g["uri"].startswith(f"/v2/{repo}/")]
    print(sum(g["written"] for g in gets), len(gets))

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "layers":
        print(json.dumps(layers(*args)))
    elif cmd == "observe":
        observe(*args)
    elif cmd == "fetched":
        fetched(*args)
    else:
        sys.exit(f"unknown command {cmd}")
PY
lazy_py() { python3 "$LAZY_PY" "$@"; }

# log_mark FILE: the current length in lines; log_since FILE MARK OUT: what was written after it.
log_mark() { wc -l <"$1"; }
log_since() { tail -n +"$(($2 + 1))" "$1" >"$3"; }

# A Pod on the node (host network, no API token) that sleeps; the image's own busybox runs it.
pod_yaml() { # NAME IMAGE
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $NS, labels: {app.kubernetes.io/part-of: soci-lazy-e2e}}
spec:
  hostNetwork: true
  automountServiceAccountToken: false
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: $2
    imagePullPolicy: IfNotPresent
    command: ["/bin/busybox", "sh", "-c", "/bin/busybox head -c 4096 /bin/busybox >/dev/null; exec /bin/busybox sleep 3600"]
EOF
}

# wait_running NAME SECONDS: until the Pod's phase is Running; describes it on failure.
wait_running() {
  if ! kubectl wait --for=jsonpath='{.status.phase}'=Running "pod/$1" -n "$NS" --timeout="${2}s" >/dev/null 2>&1; then
    kubectl get pod "$1" -n "$NS" -o wide 2>&1
    kubectl describe pod "$1" -n "$NS" 2>&1 | tail -n 15
    return 1
  fi
}

# forget POD REF CHAIN...: delete the Pod, its sandbox and the image on the node, and wait until
# the node holds none of the image's layer snapshots, so that the next Pod pulls it again.
forget() {
  local pod=$1 ref=$2 id left i; shift 2
  # Not --force: the Pod must be gone from the kubelet too, or it recreates the sandbox and
  # pulls the image again behind our back.
  kubectl delete pod "$pod" -n "$NS" --grace-period=1 --wait=true --timeout=90s >/dev/null 2>&1
  for id in $("${CRICTL[@]}" pods --namespace "$NS" --name "^$pod\$" -q 2>/dev/null); do
    "${CRICTL[@]}" stopp "$id" >/dev/null 2>&1
    "${CRICTL[@]}" rmp -f "$id" >/dev/null 2>&1
  done
  "${CRICTL[@]}" rmi "$ref" >/dev/null 2>&1
  for i in $(seq 1 60); do
    left=$("${CTR[@]}" snapshots --snapshotter soci ls 2>/dev/null | awk '{print $1}' | grep -cxF -f <(printf '%s\n' "$@") || true)
    if ((left == 0)); then
      # A late pull would bring the image back: check it stays gone.
      sleep 1
      "${CRICTL[@]}" inspecti "$ref" >/dev/null 2>&1 || return 0
      echo "the image $ref came back on the node"
      return 1
    fi
    sleep 1
  done
  echo "the node still holds $left snapshot(s) of $ref"
  return 1
}

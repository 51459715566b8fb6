"""Helpers of e2e/scale-bench (stdlib only): replicate seed images under many tags, count the
registry's access log, diff the API server's request counters, and print the table."""
import http.client
import json
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}


class Registry:
    """One keep-alive connection per thread to a plain-HTTP registry."""

    def __init__(self, host):
        self.host = host
        self.local = threading.local()

    def request(self, method, path, body=None, headers=None):
        for attempt in range(3):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                r = conn.getresponse()
                data = r.read()
                return r.status, dict(r.getheaders()), data
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def manifest(self, repo, ref):
        status, headers, data = self.request("GET", f"/v2/{repo}/manifests/{ref}",
                                             headers={"Accept": MANIFEST_TYPES})
        if status != 200:
            sys.exit(f"GET {repo}:{ref}: HTTP {status}: {data[:200]!r}")
        ctype = {k.lower(): v for k, v in headers.items()}["content-type"]
        return ctype, data


def graph(reg, repo, ref, manifests, blobs):
    """Every manifest (digest -> (type, bytes)) and blob reachable from REPO:REF, including
    the SOCI index manifest named by a v2 binding's annotation."""
    ctype, data = reg.manifest(repo, ref)
    doc = json.loads(data)
    digest = ref if ref.startswith("sha256:") else None
    if digest:
        manifests[digest] = (ctype, data)
    for child in doc.get("manifests", []):
        if child["digest"] not in manifests:
            graph(reg, repo, child["digest"], manifests, blobs)
    for d in [doc.get("config")] + doc.get("layers", []):
        if d:
            blobs.add(d["digest"])
    bound = doc.get("annotations", {}).get("com.amazon.soci.index-digest")
    if bound and bound not in manifests:
        graph(reg, repo, bound, manifests, blobs)
    return ctype, data


def replicate(host, seed_repo, seeds, objects, per, threads):
    """bench/r<i>:t<j> = seed s<j mod seeds>, bench/r<i>:t<j>-soci = its converted target."""
    reg = Registry(host)
    manifests, blobs, tops = {}, set(), []
    for s in range(seeds):
        src = graph(reg, seed_repo, f"s{s}", manifests, blobs)
        tgt = graph(reg, seed_repo, f"s{s}-soci", manifests, blobs)
        tops.append((src, tgt))
    # Children before the indexes that list them: the registry checks they exist.
    leaves = [(d, m) for d, m in manifests.items() if m[0] not in INDEX_TYPES]
    parents = [(d, m) for d, m in manifests.items() if m[0] in INDEX_TYPES]
    done = Counter()

    def one_repo(i):
        repo = f"bench/r{i}"
        for b in sorted(blobs):
            status, _, data = reg.request(
                "POST", f"/v2/{repo}/blobs/uploads/?mount={b}&from={seed_repo}",
                body=b"", headers={"Content-Length": "0"})
            if status != 201:
                raise RuntimeError(f"mount {b} into {repo}: HTTP {status} {data[:200]!r}")
        for d, (ctype, data) in leaves + parents:
            put(reg, repo, d, ctype, data)
        for j in range(per):
            (sct, sdata), (tct, tdata) = tops[j % seeds]
            put(reg, repo, f"t{j}", sct, sdata)
            put(reg, repo, f"t{j}-soci", tct, tdata)
        done["repos"] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(one_repo, i) for i in range(objects)]:
            f.result()
    took = time.monotonic() - started
    print(f"replicated {len(manifests)} manifests and {len(blobs)} blobs into {done['repos']} "
          f"repositories, {objects * per} source and {objects * per} target tags in {took:.1f} s",
          file=sys.stderr)


def put(reg, repo, ref, ctype, data):
    status, _, body = reg.request("PUT", f"/v2/{repo}/manifests/{ref}", body=data,
                                  headers={"Content-Type": ctype})
    if status != 201:
        raise RuntimeError(f"PUT {repo}:{ref}: HTTP {status} {body[:300]!r}")


# --- the registry's access log ------------------------------------------------------------------
ACCESS = re.compile(r'^\S+ - \S+ \[([^\]]+)\] "(\w+) (\S+) HTTP/[\d.]+" (\d+) \d+ "[^"]*" "([^"]*)"')


def access_lines(path, start, end):
    """(time, method, uri, status) of soci-operator's requests between two byte offsets."""
    with open(path, "rb") as f:
        f.seek(start)
        chunk = f.read(end - start).decode(errors="replace")
    out = []
    for line in chunk.splitlines():
        m = ACCESS.match(line)
        if m and m.group(5).startswith("soci-operator"):
            when = datetime.strptime(m.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
            out.append((when, m.group(2), m.group(3), int(m.group(4))))
    return out


TAGGED = re.compile(r"/v2/(.+)/manifests/([^/?]+)$")


def kind(method, uri):
    path = uri.split("?")[0]
    m = TAGGED.match(path)
    if m:
        ref = m.group(2)
        what = "digest" if ref.startswith("sha256:") else "referrers tag" if ref.startswith("sha256-") else "tag"
        return f"manifest {method} by {what}"
    if "/referrers/" in path:
        return f"referrers {method}"
    if "/blobs/" in path:
        return f"blob {method}"
    if "token" in path or "auth" in path:
        return "token"
    return "other"


def regcount(path, start, end, images, interval):
    """Counts by kind, and per image (source tag and its target tag together) the most requests
    within any span of one interval (access log times are whole seconds)."""
    lines = access_lines(path, int(start), int(end))
    images, interval = int(images), float(interval)
    kinds = Counter(kind(m, u) for _, m, u, _ in lines)
    statuses = Counter(s for *_, s in lines)
    per_image = defaultdict(list)
    for when, m, u, _ in lines:
        mm = TAGGED.match(u.split("?")[0])
        if mm and kind(m, u).endswith("by tag"):
            tag = mm.group(2)
            role = "target" if tag.endswith("-soci") else "source"
            per_image[(mm.group(1), tag.removesuffix("-soci"))].append((when, f"{role} {m}"))

    def most(ts):
        ts.sort()
        lo, best = 0, 0
        for hi in range(len(ts)):
            while ts[hi] - ts[lo] >= interval - 1:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    worst, worst_by = 0, Counter()
    for reqs in per_image.values():
        worst = max(worst, most([t for t, _ in reqs]))
        for what in {w for _, w in reqs}:
            worst_by[what] = max(worst_by[what], most([t for t, w in reqs if w == what]))
    unattributed = sum(v for k, v in kinds.items() if not k.endswith("by tag"))
    print(json.dumps({
        "total": len(lines), "kinds": dict(kinds), "statuses": {str(k): v for k, v in statuses.items()},
        "per_image": len(lines) / images, "images_seen": len(per_image), "unattributed": unattributed,
        "max_per_image_per_interval": worst, "max_per_tag_per_interval": dict(worst_by)}))


# --- kube-apiserver /metrics --------------------------------------------------------------------
REQ = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$")
RESOURCES = ("sociindexes", "jobs", "pods", "secrets", "events", "leases")


def api_counts(path):
    out = Counter()
    for line in open(path):
        m = REQ.match(line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("resource") in RESOURCES:
            res = labels["resource"] + ("/" + labels["subresource"] if labels.get("subresource") else "")
            out[(res, labels.get("verb", "?"))] += float(m.group(2))
    return out


def apidiff(before, after):
    a, b = api_counts(before), api_counts(after)
    diff = {f"{r} {v}": int(b[(r, v)] - a.get((r, v), 0)) for (r, v) in b if b[(r, v)] - a.get((r, v), 0) > 0}
    print(json.dumps(diff))


# --- a counting proxy between the operator and the API server ---------------------------------
def apiproxy(config_json, port, log_path, workdir):
    """Plain HTTP on 127.0.0.1:PORT to the API server over TLS with the admin credentials; logs
    `time METHOD path?query` per request (the operator's only: it is the one client)."""
    import base64
    import os
    import socket
    import ssl
    from urllib.parse import urlparse
    cfg = json.load(open(config_json))
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]

    def pem(obj, key, name):
        if obj.get(key):
            return obj[key]
        path = os.path.join(workdir, name)
        with open(path, "wb") as f:
            f.write(base64.b64decode(obj[key + "-data"]))
        return path

    ctx = ssl.create_default_context(cafile=pem(cluster, "certificate-authority", "ca.pem"))
    ctx.load_cert_chain(pem(user, "client-certificate", "cert.pem"), pem(user, "client-key", "key.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    url = urlparse(cluster["server"])
    log = open(log_path, "a", buffering=1)
    lock = threading.Lock()

    def pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def requests(client, upstream):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
                method, target = lines[0].split(" ")[:2]
                with lock:
                    log.write(f"{time.time():.3f} {method} {target} {headers.get('content-type', '-').replace(' ', '')}\n")
                upstream.sendall(head + b"\r\n\r\n")
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:  # forward chunks until the last one
                        while b"\r\n" not in buf:
                            buf += client.recv(65536)
                        size_line, rest = buf.split(b"\r\n", 1)
                        size = int(size_line.split(b";")[0], 16)
                        while len(rest) < size + 2:
                            rest += client.recv(65536)
                        upstream.sendall(size_line + b"\r\n" + rest[:size + 2])
                        buf = rest[size + 2:]
                        if size == 0:
                            break
                else:
                    n = int(headers.get("content-length", "0"))
                    while len(buf) < n:
                        data = client.recv(65536)
                        if not data:
                            return
                        buf += data
                    upstream.sendall(buf[:n])
                    buf = buf[n:]
        except (OSError, ValueError):
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(client):
        try:
            raw = socket.create_connection((url.hostname, url.port or 443))
            upstream = ctx.wrap_socket(raw, server_hostname=url.hostname)
        except OSError:
            client.close()
            return
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        requests(client, upstream)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(64)
    print("listening", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


API_PATH = re.compile(r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/([^/]+))?/([^/]+)(?:/([^/]+))?(?:/([^/]+))?$")


def apicount(path, start, end):
    """The proxy log between two byte offsets as `resource[/subresource] VERB` counts."""
    from urllib.parse import parse_qs, urlparse
    with open(path, "rb") as f:
        f.seek(int(start))
        chunk = f.read(int(end) - int(start)).decode(errors="replace")
    out = Counter()
    for line in chunk.splitlines():
        _, method, target, ctype = line.split(" ", 3)
        u = urlparse(target)
        m = API_PATH.match(u.path)
        if not m:
            out[f"{u.path} {method}"] += 1
            continue
        _, resource, name, sub = m.groups()
        # The API server's verb names (apiserver_request_total), to compare the columns.
        verb = {"GET": "GET" if name else "LIST"}.get(method, method)
        if method == "PATCH" and "apply-patch" in ctype:
            verb = "APPLY"
        if method == "GET" and parse_qs(u.query).get("watch", ["false"])[0] in ("true", "1"):
            verb = "WATCH"
        out[f"{resource + ('/' + sub if sub else '')} {verb}"] += 1
    print(json.dumps(dict(out)))


# --- the report ---------------------------------------------------------------------------------
def report(path):
    r = json.load(open(path))
    mib = lambda kib: f"{kib / 1024:.1f} MiB"
    images = r["objects"] * r["per"]
    print(f"scale-bench: {r['objects']} SociIndexes x {r['per']} images = {images} images, "
          f"interval {r['interval']}, operator {r['binary']}")
    print(f"  seeding: {r['seed_secs']:.0f} s; apply: {r['apply_secs']:.0f} s; "
          f"start -> all Ready: {r['ready_secs']:.1f} s; steady window: {r['steady_secs']:.0f} s "
          f"({r['steady_secs'] / r['interval_secs']:.2f} intervals)")
    print(f"  {'phase':<10} {'peak RSS':>10} {'CPU s':>8} {'registry req':>13} {'API req':>9} {'reconciles':>11}")
    for phase in ("startup", "steady"):
        p = r[phase]
        print(f"  {phase:<10} {mib(p['hwm_kib']):>10} {p['cpu_secs']:>8.1f} {p['registry']['total']:>13} "
              f"{sum(p['op_api'].values()):>9} {p.get('reconciles', '?'):>11}")
    for phase in ("startup", "steady"):
        p = r[phase]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(p["registry"]["kinds"].items())) or "none"
        print(f"  registry requests, {phase} ({p['registry']['per_image']:.2f} per image): {kinds}; "
              f"statuses {p['registry']['statuses']}")
    s = r["steady"]["registry"]
    intervals = r["steady_secs"] / r["interval_secs"]
    print(f"  steady window ({intervals:.2f} intervals): {s['per_image']:.2f} registry requests per image; "
          f"{s['images_seen']} of {images} images touched; at most {s['max_per_image_per_interval']} "
          f"requests for one image within one interval, by tag and method: {s['max_per_tag_per_interval'] or 'none'}; "
          f"{s['unattributed']} requests by digest/blob/other")
    print("  API requests: the operator's (counted by the proxy in front of it), and the API server's "
          "apiserver_request_total for these resources (all clients: other tests, the controller-manager, "
          "scheduler and kubelet touch them too):")
    st, sd = r["startup"], r["steady"]
    keys = sorted(set(st["api"]) | set(sd["api"]) | set(st["op_api"]) | set(sd["op_api"]))
    print(f"    {'resource verb':<32} {'operator startup':>16} {'operator steady':>16} {'all startup':>12} {'all steady':>11}")
    for k in keys:
        print(f"    {k:<32} {st['op_api'].get(k, 0):>16} {sd['op_api'].get(k, 0):>16} "
              f"{st['api'].get(k, 0):>12} {sd['api'].get(k, 0):>11}")
    print(f"  Jobs created: {r['jobs_created']}")
    hwm = max(r["startup"]["hwm_kib"], r["steady"]["hwm_kib"])
    heads = sum(v for k, v in s["kinds"].items() if k.startswith("manifest HEAD"))
    others = s["total"] - heads
    per_image_ok = s["max_per_image_per_interval"] <= 1 and others == 0
    per_tag_ok = all(v <= 1 for v in s["max_per_tag_per_interval"].values()) and others == 0 and \
        all(k.endswith("HEAD") for k in s["max_per_tag_per_interval"])
    print(f"targets: RSS < 100 MiB: {'yes' if hwm < 100 * 1024 else 'no'} (peak {mib(hwm)}); "
          f"registry requests per image per interval <= 1 HEAD: {'yes' if per_image_ok else 'no'} "
          f"(at most {s['max_per_image_per_interval']} per image, {heads} HEADs and {others} other "
          f"requests in the window); <= 1 HEAD per tag (source, target) per interval: "
          f"{'yes' if per_tag_ok else 'no'}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "replicate":
        replicate(args[0], args[1], *map(int, args[2:]))
    elif cmd == "regcount":
        regcount(*args)
    elif cmd == "apidiff":
        apidiff(*args)
    elif cmd == "apiproxy":
        apiproxy(*args)
    elif cmd == "apicount":
        apicount(*args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(f"unknown command {cmd}")

#!/usr/bin/env bash
# Builds the pinned Go programs the project tests against (the upstream soci CLI as the
# compatibility oracle, and the proving ground's Kubernetes, containerd, registry tools) from the
# Go module proxy into one cache directory. Idempotent: a program is rebuilt only when its pin
# changes. Usage: e2e/tools.sh [--print-dir] [TOOL ...]   (no TOOL = all)
set -euo pipefail

CACHE_DIR="${SOCI_OPERATOR_CACHE:-$HOME/.cache/soci-operator}/tools"
BIN_DIR="$CACHE_DIR/bin"
STAMP_DIR="$CACHE_DIR/stamps"
export GOPATH="$CACHE_DIR/gopath" GOCACHE="$CACHE_DIR/gocache" GOMODCACHE="$CACHE_DIR/gopath/pkg/mod"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOTELEMETRY=off

if [[ "${1:-}" == "--print-dir" ]]; then echo "$BIN_DIR"; exit 0; fi

# name | pin (changing it rebuilds) | debian packages needed to build
declare -A PIN=(
  [soci]="github.com/awslabs/soci-snapshotter/cmd@v0.0.0-20260930233240-61147fe7c929 (v0.16.1)"
  [kubernetes]="k8s.io/kubernetes@v1.36.3"
  [etcd]="go.etcd.io/etcd/server/v3@v3.6.14"
  [containerd]="github.com/containerd/containerd/v2@v2.2.9"
  [runc]="github.com/opencontainers/runc@v1.3.6"
  [crictl]="sigs.k8s.io/cri-tools@v1.37.0"
  [helm]="helm.sh/helm/v3@v3.22.0"
  [crane]="github.com/google/go-containerregistry@v0.22.1"
  # Our own program (e2e/kstatus) on the pinned kstatus library: its source is part of the pin.
  [kstatus]="sigs.k8s.io/cli-utils@v0.37.2 source $(cat "$(dirname "${BASH_SOURCE[0]}")"/kstatus/{go.mod,go.sum,main.go} | sha256sum | cut -c1-16)"
)
ORDER=(soci crane kubernetes etcd containerd runc crictl helm kstatus)

log() { printf '[tools] %s\n' "$*" >&2; }

need_debs() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# wrapper_build NAME MODULE_REQUIRE_LINES REPLACE_LINES PACKAGES... : a throwaway module that
# requires the upstream module and lists its commands as tools (go install refuses replace lines).
wrapper_build() {
  local name=$1 requires=$2 replaces=$3; shift 3
  local dir="$CACHE_DIR/wrappers/$name"
  rm -rf "$dir"; mkdir -p "$dir" "$BIN_DIR"
  {
    echo "module soci-operator-tools/$name"
    echo "go 1.26"
    echo "$requires"
    echo "$replaces"
    echo "tool ("; printf '\t%s\n' "$@"; echo ")"
  } >"$dir/go.mod"
  (cd "$dir" && go mod tidy >/dev/null 2>"$dir/tidy.log" || { cat "$dir/tidy.log" >&2; exit 1; })
  (cd "$dir" && go build ${BUILD_TAGS:+-tags "$BUILD_TAGS"} ${LDFLAGS:+-ldflags "$LDFLAGS"} -o "$BIN_DIR/" "$@")
}

build_soci() {
  need_debs zlib1g-dev pkg-config
  CGO_ENABLED=1 wrapper_build soci \
    "require github.com/awslabs/soci-snapshotter/cmd v0.0.0-20260930233240-61147fe7c929" \
    "replace github.com/awslabs/soci-snapshotter => github.com/awslabs/soci-snapshotter v0.16.1
replace github.com/hashicorp/golang-lru => github.com/ktock/golang-lru v0.5.5-0.20211029085301-ec551be6f75c
replace cyphar.com/go-pathrs => github.com/cyphar/libpathrs/go-pathrs v0.2.1" \
    github.com/awslabs/soci-snapshotter/cmd/soci github.com/awslabs/soci-snapshotter/cmd/soci-snapshotter-grpc
}

build_crane() {
  CGO_ENABLED=0 wrapper_build crane "require github.com/google/go-containerregistry v0.22.1" "" \
    github.com/google/go-containerregistry/cmd/crane
}

# Built in a copy, so the build never writes into the work tree (go.sum is complete).
build_kstatus() {
  local dir="$CACHE_DIR/wrappers/kstatus"
  rm -rf "$dir"; mkdir -p "$dir" "$BIN_DIR"
  cp "$(dirname "${BASH_SOURCE[0]}")"/kstatus/{go.mod,go.sum,main.go} "$dir/"
  (cd "$dir" && CGO_ENABLED=0 go build -o "$BIN_DIR/kstatus" .)
}

build_helm() {
  CGO_ENABLED=0 wrapper_build helm "require helm.sh/helm/v3 v3.22.0" "" helm.sh/helm/v3/cmd/helm
}

build_crictl() {
  CGO_ENABLED=0 wrapper_build crictl "require sigs.k8s.io/cri-tools v1.37.0" "" sigs.k8s.io/cri-tools/cmd/crictl
}

build_runc() {
  need_debs libseccomp-dev pkg-config
  CGO_ENABLED=1 BUILD_TAGS=seccomp wrapper_build runc "require github.com/opencontainers/runc v1.3.6" "" \
    github.com/opencontainers/runc
}

build_containerd() {
  CGO_ENABLED=1 BUILD_TAGS=no_btrfs wrapper_build containerd "require github.com/containerd/containerd/v2 v2.2.9" "" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr
}

build_etcd() {
  CGO_ENABLED=0 wrapper_build etcd "require go.etcd.io/etcd/server/v3 v3.6.14" "" go.etcd.io/etcd/server/v3
  mv -f "$BIN_DIR/server" "$BIN_DIR/etcd" 2>/dev/null || mv -f "$BIN_DIR/v3" "$BIN_DIR/etcd"
}

# Kubernetes' go.mod maps every staging module to a local path; map each to the published
# module at the matching version.
build_kubernetes() {
  local v=1.36.3 sv=0.36.3 gomod replaces="" line mod
  gomod=$(go mod download -json "k8s.io/kubernetes@v$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  while read -r line; do
    mod=$(awk '{print $1}' <<<"$line")
    case "$line" in
      *"=> ./"*|*"=> ../"*) replaces+="replace $mod => $mod v$sv"$'\n' ;;
      *"=>"*) replaces+="replace $line"$'\n' ;;
    esac
  done < <(sed -n '/^replace (/,/^)/p' "$gomod" | grep '=>' | sed 's/^[[:space:]]*//')
  local pkg="k8s.io/component-base/version" cg="k8s.io/client-go/pkg/version"
  CGO_ENABLED=0 BUILD_TAGS="selinux,notest,grpcnotrace" \
    LDFLAGS="-s -w -X $pkg.gitVersion=v$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=36 -X $cg.gitVersion=v$v -X $cg.gitMajor=1 -X $cg.gitMinor=36" \
    wrapper_build kubernetes "require k8s.io/kubernetes v$v" "$replaces" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
}

tools=("$@"); ((${#tools[@]})) || tools=("${ORDER[@]}")
mkdir -p "$STAMP_DIR" "$BIN_DIR"
for t in "${tools[@]}"; do
  [[ -n "${PIN[$t]:-}" ]] || { log "unknown tool: $t (known: ${ORDER[*]})"; exit 2; }
  if [[ -f "$STAMP_DIR/$t" && "$(cat "$STAMP_DIR/$t")" == "${PIN[$t]}" ]]; then
    continue
  fi
  start=$(date +%s)
  log "building $t (${PIN[$t]})"
  "build_$t"
  echo "${PIN[$t]}" >"$STAMP_DIR/$t"
  log "built $t in $(( $(date +%s) - start )) s"
done
echo "$BIN_DIR"

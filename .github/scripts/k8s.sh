#!/usr/bin/env bash
# Deploy steps of the ci workflow, as one script so each step is short and shellchecked, and so a
# developer can run the same sequence on a laptop (`nix develop -c .github/scripts/k8s.sh ...`).
#
#   k8s.sh cluster-up                 minikube with Calico (NetworkPolicy) and metrics-server
#   k8s.sh build-image REF OUT.tar    nix build REF (an image) and write it as a docker archive
#   k8s.sh load-image REF TAG         build REF, docker load it as TAG, minikube image load TAG
#   k8s.sh deploy-baseline            deploy the parent commit's image + dev overlay (the version a
#                                     failed candidate rolls back to); records its revision
#   k8s.sh deploy DIR                 kubectl apply -k DIR and wait for the rollout
#   k8s.sh url                        the dev NodePort URL, http://<minikube ip>:30080
#   k8s.sh rollback                   kubectl rollout undo to the baseline revision, wait, smoke
#   k8s.sh diagnose                   what a human needs to see after a failure
#
# K8S_NAMESPACE (shipshape-dev), K8S_DEPLOYMENT (shipshape) and K8S_NODEPORT (30080) must match
# kustomize/overlays/dev; .ci/workflows.sh checks that they do.
set -euo pipefail
cd "$(dirname "$0")/../.."

ns=${K8S_NAMESPACE:-shipshape-dev}
deploy=${K8S_DEPLOYMENT:-shipshape}
nodeport=${K8S_NODEPORT:-30080}
state=${RUNNER_TEMP:-${TMPDIR:-/tmp}}/shipshape-k8s
mkdir -p "$state"

log() { printf '==> %s\n' "$*"; }
notice() { if [ -n "${GITHUB_ACTIONS:-}" ]; then echo "::notice::$*"; else log "$*"; fi; }

# image_tar REF OUT: build a dockerTools image and write a docker archive (handles both
# buildLayeredImage, whose result is the archive, and streamLayeredImage, whose result is a
# script that streams it).
image_tar() {
  local ref=$1 out=$2 link
  link="$state/result-$(basename "$out" .tar)"
  nix build "$ref" --print-build-logs --out-link "$link"
  if [ -x "$link" ] && [ ! -d "$link" ] && head -c 2 "$link" | grep -q '#!'; then
    "$link" >"$out"
  else
    cp --dereference "$link" "$out"
  fi
  log "$ref -> $out ($(du -h "$out" | cut -f1))"
}

# docker_load TAR TAG: load an archive into Docker and tag it; prints the image ID.
docker_load() {
  local tar=$1 tag=$2 loaded
  loaded=$(docker load --input "$tar" | sed -n 's/^Loaded image: //p; s/^Loaded image ID: //p' | tail -n 1)
  [ -n "$loaded" ] || { echo "docker load printed no image name" >&2; return 1; }
  docker tag "$loaded" "$tag"
  docker image inspect --format '{{.Id}}' "$tag"
}

rollout() {
  kubectl -n "$ns" rollout status "deploy/$deploy" --timeout=180s
  kubectl -n "$ns" get deploy "$deploy" -o jsonpath='{.spec.template.spec.containers[0].image}{"  revision "}{.metadata.annotations.deployment\.kubernetes\.io/revision}{"\n"}'
}

url() { echo "http://$(minikube ip):$nodeport"; }

case ${1:-} in
  cluster-up)
    minikube start --driver=docker --cni=calico --addons=metrics-server --wait=all \
      --cpus=2 --memory=6g
    kubectl get nodes -o wide
    ;;
  build-image)
    image_tar "$2" "$3"
    ;;
  load-image)
    image_tar "$2" "$state/candidate.tar"
    id=$(docker_load "$state/candidate.tar" "$3")
    minikube image load "$3"
    log "candidate $3 = $id"
    ;;
  deploy-baseline)
    # The parent commit is the version running before this change: for a pull request the
    # checkout is the merge commit and HEAD^1 is the base branch; on main it is the previous
    # commit. Build its image from its own flake (a cachix hit when main's CI pushed it) and
    # deploy it with its own dev overlay, tagged shipshape:baseline.
    tree="$state/baseline-tree"
    rm -rf "$tree"
    mkdir -p "$tree"
    base=$(git rev-parse --verify --quiet 'HEAD^1' || true)
    if [ -n "$base" ] && git cat-file -e "$base:flake.nix" 2>/dev/null \
      && git cat-file -e "$base:kustomize/overlays/dev/kustomization.yaml" 2>/dev/null \
      && git archive "$base" | tar -x -C "$tree" \
      && image_tar "path:$tree#image" "$state/baseline.tar"; then
      log "baseline: parent commit $base"
    else
      notice "baseline: the parent commit has no buildable image and dev overlay; rolling back to the candidate image instead (the rollback drill still runs, against the same version)"
      rm -rf "$tree"
      mkdir -p "$tree"
      git archive HEAD kustomize | tar -x -C "$tree"
      cp "$state/candidate.tar" "$state/baseline.tar"
    fi
    docker_load "$state/baseline.tar" shipshape:baseline >/dev/null
    minikube image load shipshape:baseline
    mkdir -p "$tree/.baseline"
    cat >"$tree/.baseline/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../kustomize/overlays/dev
images:
  - name: shipshape
    newTag: baseline
EOF
    kubectl apply -k "$tree/.baseline"
    rollout
    kubectl -n "$ns" get deploy "$deploy" \
      -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}' >"$state/baseline-revision"
    .github/scripts/smoke.sh "$(url)"
    log "baseline serves; revision $(cat "$state/baseline-revision")"
    ;;
  deploy)
    kubectl apply -k "$2"
    rollout
    ;;
  url)
    url
    ;;
  rollback)
    rev=$(cat "$state/baseline-revision")
    log "rolling back deploy/$deploy to the baseline revision $rev"
    kubectl -n "$ns" rollout undo "deploy/$deploy" --to-revision="$rev"
    rollout
    .github/scripts/smoke.sh "$(url)"
    notice "rolled back: the previous version serves again (smoke test passed after kubectl rollout undo)"
    ;;
  diagnose)
    set +e
    kubectl -n "$ns" get all,networkpolicy,pdb,hpa,events -o wide
    kubectl -n "$ns" describe deploy "$deploy"
    kubectl -n "$ns" describe pods -l app.kubernetes.io/name=shipshape
    kubectl -n "$ns" logs -l app.kubernetes.io/name=shipshape --all-containers --prefix --tail=200
    kubectl -n "$ns" logs -l app.kubernetes.io/name=shipshape --all-containers --prefix --previous --tail=50
    kubectl top pods -n "$ns"
    exit 0
    ;;
  *)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac

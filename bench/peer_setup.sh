#!/usr/bin/env bash
# Side-by-side peer environment for benchmarks: torchreid 0.2.5 in its own venv.
#
#   bash bench/peer_setup.sh          # create/refresh .venv-peer (idempotent)
#   PEER_FORCE=1 bash bench/peer_setup.sh   # reinstall even if the marker is present
#
# The venv lives at <repo>/.venv-peer (git-ignored via `.venv-*/`). Override with
# PEER_VENV=/some/path. A marker file records the exact requirement set; when it
# matches, the script exits immediately.
#
# Dependency notes (torchreid 0.2.5 on PyPI is an sdist with NO declared
# install_requires, so nothing it declares can pull a different torch; we still
# install it with --no-deps and list its real runtime imports by hand):
#   * importing anything under torchreid.reid.* runs torchreid/__init__.py, which
#     imports data (PIL, scipy, gdown -- university1652.py imports gdown at module
#     top level), engine (torch.utils.tensorboard -> tensorboard), utils (cv2).
#   * h5py / imageio / six are only imported lazily (CUHK03 prep, URL downloads);
#     six is cheap so we add it, h5py/imageio are not needed for our tasks.
#   * the Cython rank extension (rank_cylib) ships without its .pyx source in the
#     sdist, so it is never built: evaluate_rank always falls back to Python.
#   * torch/torchvision are pinned to the versions on local disk
#     (torch==2.14.1, torchvision==0.29.1); never let pip resolve another torch.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PEER_VENV:-$REPO_ROOT/.venv-peer}"
PY="${PYTHON:-python3}"

TORCH_REQS=("torch==2.14.1" "torchvision==0.29.1")
RUNTIME_REQS=(
  "scipy" "tensorboard" "opencv-python-headless<5" "psutil" "numpy"
  "pillow" "gdown" "six"
)
PEER_REQS=("torchreid==0.2.5")

MARKER="$VENV/.peer-setup-ok"
SIGNATURE="v1 ${TORCH_REQS[*]} | ${RUNTIME_REQS[*]} | ${PEER_REQS[*]} (no-deps)"

if [[ -z "${PEER_FORCE:-}" && -f "$MARKER" && -x "$VENV/bin/python" ]] \
   && [[ "$(cat "$MARKER")" == "$SIGNATURE" ]]; then
  echo "peer env ready: $VENV (marker present; PEER_FORCE=1 to reinstall)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# pip, minus the harmless "Location ... is ignored" noise from index dirs that
# this machine's pip config lists but that lack a given package.
vpip() {
  "$VPY" -m pip "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}

# Constraints file pins torch/torchvision for every step, so a later step can
# never swap torch out from under us.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
printf '%s\n' "${TORCH_REQS[@]}" > "$CONSTRAINTS"

echo "installing torch + runtime deps into $VENV"
vpip install -q -c "$CONSTRAINTS" "${TORCH_REQS[@]}" "${RUNTIME_REQS[@]}"

echo "installing ${PEER_REQS[*]} (--no-deps)"
vpip install -q --no-deps -c "$CONSTRAINTS" "${PEER_REQS[@]}"

echo "checking imports"
"$VPY" - <<'PYCHECK'
import warnings
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    import torch, torchvision
    import torchreid
    from torchreid.reid import metrics, models, losses, optim, engine
    from torchreid.reid.utils import re_ranking, FeatureExtractor
    from torchreid.reid.metrics import rank
assert torch.__version__.split("+")[0] == "2.14.1", torch.__version__
assert torchvision.__version__.split("+")[0] == "0.29.1", torchvision.__version__
evaluator = "cython" if rank.IS_CYTHON_AVAI else "python"
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"torchreid {torchreid.__version__}, evaluate_rank backend: {evaluator}")
PYCHECK

echo "$SIGNATURE" > "$MARKER"
echo "peer env ready: $VENV"

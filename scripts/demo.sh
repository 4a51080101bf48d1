#!/usr/bin/env bash
# The main job end to end (run by `make demo`): real pedestrian footage in, "every appearance of
# this person" out. Ingests the video (detect -> track -> best crops -> embed with the shipped
# default model -> gallery), picks the person seen longest as the query, searches the gallery for
# their other appearances, prints a summary and writes the HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_OUT:-demo_out}
video=${REIDKIT_VIDEO:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}
rk=.venv/bin/reidkit
if [ ! -f "$video" ]; then
  echo "error: no footage at $video (make installs Debian's opencv-doc where apt is usable; or set REIDKIT_VIDEO=FILE)" >&2
  exit 2
fi
mkdir -p "$out"

echo "== 1. ingest $video"
$rk ingest "$video" --gallery "$out/gallery" --camera entrance --stride 2 --replace

echo "== 2. the query: the person followed longest"
track=$(.venv/bin/python - "$out/gallery" <<'PY'
import sys
from reidkit.search import Gallery
with Gallery.open(sys.argv[1], read_only=True) as g:
    t = max(g.tracks(), key=lambda t: (t.last_time - t.first_time, t.n_crops))
    print(t.id)
    print(f"track {t.id}: camera {t.camera}, {t.first_time:.1f}-{t.last_time:.1f} s, {t.n_crops} crops", file=sys.stderr)
PY
)

echo "== 3. where else does this person appear?"
$rk search --gallery "$out/gallery" --track "$track" --json "$out/search.json" --html "$out/report.html"
echo "wrote $out/report.html and $out/search.json"

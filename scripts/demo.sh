#!/usr/bin/env bash
# The main job end to end (run by `make demo`): real pedestrian footage in, "every appearance of
# this person" out. Ingests the video (detect -> track -> best crops -> embed with the shipped
# default model -> gallery), picks the person seen longest as the query, searches the gallery for
# their other appearances, prints a summary and writes the HTML report. Then it searches every
# person in the footage and reports the longest-followed one that the match rule finds again
# elsewhere (a second report), so both outcomes -- "no confident match" and "found again" -- show.
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
from reidkit.search.storage import Gallery
with Gallery.open(sys.argv[1], read_only=True) as g:
    t = max(g.tracks(), key=lambda t: (t.last_time - t.first_time, t.n_crops))
    print(t.id)
    print(f"track {t.id}: camera {t.camera}, {t.first_time:.1f}-{t.last_time:.1f} s, {t.n_crops} crops", file=sys.stderr)
PY
)

echo "== 3. where else does this person appear?"
$rk search --gallery "$out/gallery" --track "$track" --json "$out/search.json" --html "$out/report.html"
echo "wrote $out/report.html and $out/search.json"

echo "== 4. who does the gallery find more than once? (every track searched)"
again=$(.venv/bin/python - "$out/gallery" <<'PY'
import sys
from reidkit.models.zoo import load_model
from reidkit.search.storage import Gallery
from reidkit.search.query.search import search_person
info = load_model()[1]
with Gallery.open(sys.argv[1], read_only=True) as g:
    tracks = sorted(g.tracks(), key=lambda t: (t.last_time - t.first_time, t.n_crops), reverse=True)
    found = [t for t in tracks if search_person(g, track_id=t.id, model_info=info, review=0).appearances]
    print(f"{len(found)} of {len(tracks)} tracks have a confident match in another track", file=sys.stderr)
    print(found[0].id if found else "")
PY
)
if [ -n "$again" ]; then
  echo "the longest-followed of them: track $again"
  $rk search --gallery "$out/gallery" --track "$again" --json "$out/search_found.json" --html "$out/report_found.html"
  echo "wrote $out/report_found.html and $out/search_found.json"
fi

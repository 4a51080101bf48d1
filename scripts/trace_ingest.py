"""Count how often following one source through ``reidkit ingest`` crosses between reidkit's files.

    .venv/bin/python scripts/trace_ingest.py [VIDEO] [--frames 30]

Runs ``reidkit ingest VIDEO --gallery <tmp> --max-frames N`` in this process under ``sys.setprofile``
and records every call from one of the operator half's files (``search/``, the CLI, ``imaging``) into
another (other frames are skipped: a call is attributed to the nearest such frame below it). It prints:

* ``call sites``: distinct (caller file:function -> callee file:function) pairs that cross files
  (module imports left out);
* ``crossings``: distinct (caller file -> callee file) pairs;
* ``back into a file already left``: distinct crossings whose callee file is already on the call
  stack below the caller (the pipeline asking a helper, which asks back into the pipeline's file);
* ``following the URI``: the walk a reader makes through the files along the calls that carry the
  source (its URI as an argument, alone, in a list or as an object's ``.uri``), each call site once in
  the order first made: how many times it moves to another file, and how many of those moves go
  back into a file it had already left.

Distinct pairs, not call counts, so the figure measures the code's shape, not the frame count.
The default video is a 30-frame cut of vtest.avi made with ``scripts/make_test_clip.py``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

# The operator half's files (before and after the layout change); the model code below ``embed`` is the
# same either way and is left out.
OPERATOR = ("search", "cli", "imaging", "ingest")
STORAGE_BEFORE = ("search/gallery.py", "search/store.py", "search/index.py")  # the layout before issue 19
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", nargs="?", default=VTEST)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--detector", default="hog")
    ap.add_argument("--list", action="store_true", help="print every crossing call site")
    ap.add_argument("--storage-as-one", action="store_true", help="count the gallery's files as one unit")
    args = ap.parse_args()

    import reidkit
    from reidkit.cli import app

    pkg = str(Path(reidkit.__file__).parent) + os.sep
    sites: set[tuple[str, str]] = set()
    back: set[tuple[str, str]] = set()
    uris = {args.video, str(Path(args.video).absolute())}
    walk: list[str] = []  # files a reader visits following the URI, in order (first time each call site is seen)
    seen_uri_sites: set[tuple[str, str]] = set()

    def carries_uri(frame) -> bool:
        for v in list(frame.f_locals.values())[: frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount]:
            for x in v if isinstance(v, list | tuple) else (v,):
                if (isinstance(x, str | Path) and str(x) in uris) or str(getattr(x, "uri", "")) in uris:
                    return True
        return False

    def short(code: object) -> str:
        name = code.co_filename[len(pkg) :]  # type: ignore[attr-defined]
        if args.storage_as_one and (name.startswith("search/storage/") or name in STORAGE_BEFORE):
            return "storage"  # behind the gallery interface: its own files are its business
        return name

    def ours(code: object) -> bool:
        name = code.co_filename  # type: ignore[attr-defined]
        return name.startswith(pkg) and name[len(pkg) :].startswith(OPERATOR)

    def prof(frame, event, _arg):
        if event != "call" or not ours(frame.f_code):
            return
        callee = short(frame.f_code)
        stack = []
        f = frame.f_back
        while f is not None:
            if ours(f.f_code):
                stack.append(f.f_code)
            f = f.f_back
        if not stack:
            return
        caller = short(stack[0])
        if caller == callee or frame.f_code.co_name == "<module>":  # imports are not following the source
            return
        site = (f"{caller}:{stack[0].co_name}", f"{callee}:{frame.f_code.co_name}")
        sites.add(site)
        if site not in seen_uri_sites and carries_uri(frame):
            seen_uri_sites.add(site)
            walk.extend((caller, callee))
        if callee in {short(c) for c in stack[1:]}:
            back.add((caller, callee))

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["ingest", args.video, "--gallery", f"{tmp}/g", "--max-frames", str(args.frames),
                "--detector", args.detector]  # fmt: skip
        sys.setprofile(prof)
        try:
            app(argv, standalone_mode=False)
        finally:
            sys.setprofile(None)
    files = {(a.split(":")[0], b.split(":")[0]) for a, b in sites}
    if args.list:
        for a, b in sorted(sites):
            print(f"  {a} -> {b}")
    moves = [b for a, b in itertools.pairwise(walk) if a != b]
    visited: set[str] = {walk[0]} if walk else set()
    backs = 0
    for b in moves:
        backs += b in visited
        visited.add(b)
    if args.list:
        print("following the URI:", " -> ".join(f for i, f in enumerate(walk) if i == 0 or walk[i - 1] != f))
    print(f"following the URI: {len(moves)} crossings between files, {backs} back into a file already left")
    print(f"call sites crossing files: {len(sites)}")
    print(f"crossings (file -> file): {len(files)}")
    print(f"back into a file already left: {len(back)}")


if __name__ == "__main__":
    main()

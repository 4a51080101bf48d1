# reidkit: `make test` and `make demo` set everything up on a fresh machine (a .venv here).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared)
export REIDKIT_DATA ?= $(SHARED)/datasets
export REIDKIT_WEIGHTS ?= $(SHARED)/weights
# glibc malloc tuning: up to 2x faster torch on CPU (see BENCHMARKS.md).
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736

STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install test demo bench lint peer vtest chromium rtsp

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,detect,cluster]'
	@rm -f $(VENV)/.installed-*; touch $@

# Real pedestrian footage (Debian's opencv-doc ships vtest.avi); installed where apt is usable.
VTEST := /usr/share/doc/opencv-doc/examples/data/vtest.avi
vtest:
	@test -f $(VTEST) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc >/dev/null) || \
	  echo "note: $(VTEST) not installed (needs apt-get as root); footage tests will skip"; }

# Headless Chromium for the search page's browser test (Playwright drives Debian's build; it downloads nothing).
CHROMIUM := /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "note: $(CHROMIUM) not installed (needs apt-get as root); the browser test will skip"; }

# A real RTSP server on loopback for the live-camera tests (tests/rtsp.py): ffmpeg publishes, Debian's
# rtsp-server-perl relays, OpenCV reads.
rtsp:
	@{ command -v ffmpeg && command -v rtsp-server-perl; } >/dev/null || { command -v apt-get >/dev/null && \
	  [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq ffmpeg rtsp-server-perl >/dev/null) || \
	  echo "note: ffmpeg/rtsp-server-perl not installed (needs apt-get as root); the live-camera tests will skip"; }

install: $(STAMP) vtest

lint: install
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/lint-imports

test: lint chromium rtsp
	$(PY) -m pytest

demo: install
	bash scripts/demo.sh

peer:
	bash bench/peer_setup.sh

FEATS := bench/out/osnet_x0_25_market1501.npz
DEFAULT_MODEL := src/reidkit/models/pretrained/osnet_x0_25_market1501_kd_cpu.pth

bench: install peer rtsp
	$(VENV)/bin/reidkit extract --model osnet_x0_25 --weights $(REIDKIT_WEIGHTS)/reid/osnet_x0_25_market1501.pth \
	  --batch-size 64 --out $(FEATS)
	$(PY) bench/eval_speed.py --features $(FEATS)
	$(PY) bench/rerank.py --features $(FEATS) --msmt
	$(PY) bench/extract_speed.py
	$(PY) bench/extract_speed.py --model none --weights $(DEFAULT_MODEL) --peer-images 0
	$(PY) bench/train_speed.py
	$(PY) bench/live_ingest.py

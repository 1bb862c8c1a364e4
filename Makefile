# Two commands do everything on a fresh machine (Python 3.10+ with venv):
#   make demo   - set up, then run the depth node end to end on a stream it makes itself
#   make test   - set up, then lint (ruff) and run the whole test suite
# Both create .venv/ on first use and reuse it afterwards.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# The ROS 2 wheels ship real rclpy + Fast DDS; keep discovery on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

.PHONY: setup test lint demo benchmark clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --progress-bar off -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check space_clip_ros test launch scripts

test: lint
	$(PY) -m pytest test

demo: setup
	$(VENV)/bin/space-clip-demo

benchmark: setup
	$(VENV)/bin/space-clip-benchmark --compare

clean:
	rm -rf $(VENV) build install log *.egg-info

# Two commands do everything on a fresh machine (Python 3.11 or 3.12 with venv; README "Two commands"):
#   make demo   - set up, then run the depth node end to end on a stream it makes itself
#   make test   - set up, lint (ruff, vermin), run the whole test suite on ROS 2 Kilted, then the
#                 ROS-facing tests again on ROS 2 Jazzy
# They create .venv/ (and, for the Jazzy pass, .venv-jazzy/) on first use and reuse them afterwards.

VENV       ?= .venv
JAZZY_VENV ?= .venv-jazzy
PYTHON     ?= python3
PY         := $(VENV)/bin/python
JAZZY_PY   := $(JAZZY_VENV)/bin/python
STAMP      := $(VENV)/.installed
JAZZY_STAMP := $(JAZZY_VENV)/.installed
PIP_INSTALL := -m pip install --quiet --progress-bar off
# The ROS-facing tests: node over DDS, message conversions, bag tool, camera simulator.
ROS_TESTS  := $(sort $(wildcard test/test_ros_*.py test/test_msgs_*.py)) test/test_bag_tool.py test/test_camera_simulator.py
JAZZY_RCLPY := 7.1.6
# The ROS 2 wheels ship real rclpy + Fast DDS; keep discovery on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

# The ROS 2 wheels' bootstrapper re-executes Python once with LD_LIBRARY_PATH pointing at its own
# environment's ROS libraries, and marks the environment as done. A Python of the other environment
# started with those variables would load the other distribution's libraries (rmw, rcl ...), so each
# pass starts without them: $(call ros_env,OTHER_VENV).
ros_env = env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE \
	LD_LIBRARY_PATH="$$(printf '%s' "$${LD_LIBRARY_PATH:-}" | tr ':' '\n' | grep -v '^$(abspath $(1))/' | paste -sd: -)"

# Python 3.10 syntax and standard library everywhere (Humble's Python). compression.zstd is Python
# 3.14's; space_clip_ros/bags/salvage.py falls back to backports.zstd when it is missing.
VERMIN := $(VENV)/bin/vermin --target=3.10- --violations --no-tips --eval-annotations --exclude compression.zstd

.PHONY: setup setup-jazzy test test-kilted test-jazzy lint demo benchmark clean

setup: $(STAMP)

$(STAMP): requirements/dev.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) $(PIP_INSTALL) -r requirements/dev.txt
	$(PY) $(PIP_INSTALL) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# .venv-jazzy: ROS 2 Jazzy's wheels and NumPy 1.26 of its own; every other package is .venv's,
# through a .pth file naming a folder of links to .venv's site-packages entries, less those of any
# ROS 2 wheel (and less NumPy and ml_dtypes). No second PyTorch, no copy. Rebuilt whenever .venv is.
define SHARE_SITE_PACKAGES
import importlib.metadata as md, pathlib, sys, sysconfig
source, target, *unshared = sys.argv[1:]
site = pathlib.Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
source_site = pathlib.Path(source).resolve() / site
shared = pathlib.Path(target).resolve() / "shared-site-packages"
unshared = {name.lower().replace("_", "-") for name in unshared}
owned = set()
for dist in md.distributions(path=[str(source_site)]):
    name = dist.metadata["Name"].lower().replace("_", "-")
    if name.startswith("ros-") or name in unshared or name == "space-clip-ros":
        owned.add(dist._path.name)
        owned.update(f.parts[0] for f in dist.files or [] if f.parts[0] != "..")
shared.mkdir()
for entry in sorted(source_site.iterdir()):
    if entry.name in owned or entry.suffix == ".pth" or entry.name.startswith(("__editable__", "__pycache__")):
        continue
    (shared / entry.name).symlink_to(entry)
(pathlib.Path(target).resolve() / site / "zz_shared_site_packages.pth").write_text(f"{shared}\n")
print(f"{source_site}: {len(list(shared.iterdir()))} entries shared, {len(owned)} ROS 2 or unshared ones left out")
endef
export SHARE_SITE_PACKAGES

# Run by every Jazzy pass: rclpy is Jazzy's and from .venv-jazzy, a message goes out and comes back
# over DDS, and every ROS 2 library in the process is .venv-jazzy's.
define CHECK_JAZZY
import importlib.metadata as md, os, sys, time
prefix = os.path.realpath(sys.prefix) + os.sep
expected = sys.argv[1]
assert md.version("ros-jazzy-rclpy") == expected, f"ros-jazzy-rclpy {md.version('ros-jazzy-rclpy')}, not {expected}"
assert md.version("ros-rclpy") == expected, f"the rclpy found is {md.version('ros-rclpy')}, not Jazzy's {expected}"
foreign = sorted(str(d._path) for d in md.distributions() if d.metadata["Name"].startswith("ros-")
                 and not os.path.realpath(d._path).startswith(prefix))
assert not foreign, f"ROS 2 wheels from outside {prefix}: {foreign}"
import rclpy
from std_msgs.msg import String
assert os.path.realpath(rclpy.__file__).startswith(prefix), f"rclpy imported from {rclpy.__file__}"
rclpy.init()
node = rclpy.create_node("jazzy_environment_check")
received = []
node.create_subscription(String, "jazzy_environment_check", received.append, 10)
publisher = node.create_publisher(String, "jazzy_environment_check", 10)
deadline = time.monotonic() + 30
while not received and time.monotonic() < deadline:
    publisher.publish(String(data="jazzy"))
    rclpy.spin_once(node, timeout_sec=0.1)
assert received, "no message came back over DDS within 30 s"
libraries = set()
for line in open("/proc/self/maps"):
    path = line.split(maxsplit=5)[-1].strip()
    if os.path.basename(path).startswith(("librcl", "librmw", "libfastdds", "libfastrtps", "librosidl", "libstd_msgs", "_rclpy")):
        libraries.add(path)
foreign = sorted(p for p in libraries if not os.path.realpath(p).startswith(prefix))
assert not foreign, f"ROS 2 libraries loaded from outside {prefix}: {foreign}"
node.destroy_node()
rclpy.shutdown()
import numpy
print(f"ROS 2 Jazzy (rclpy {expected}) from {prefix}: pub/sub over DDS, {len(libraries)} ROS 2 libraries all its own; NumPy {numpy.__version__}")
endef
export CHECK_JAZZY

setup-jazzy: $(JAZZY_STAMP)

$(JAZZY_STAMP): $(STAMP) requirements/jazzy.txt setup.py
	rm -rf $(JAZZY_VENV)
	$(PY) -m venv --without-pip $(JAZZY_VENV)
	$(PY) -c "$$SHARE_SITE_PACKAGES" $(VENV) $(JAZZY_VENV) numpy ml_dtypes
	$(PY) -m pip --python $(JAZZY_PY) install --quiet --progress-bar off -r requirements/jazzy.txt
	$(PY) -m pip --python $(JAZZY_PY) install --quiet --no-deps --no-build-isolation -e .
	@touch $(JAZZY_STAMP)

lint: setup
	$(VENV)/bin/ruff check space_clip_ros test launch scripts
	$(VERMIN) space_clip_ros test launch scripts setup.py

test: lint test-kilted test-jazzy

test-kilted: setup
	$(call ros_env,$(JAZZY_VENV)) $(PY) -m pytest test

test-jazzy: setup-jazzy
	$(call ros_env,$(VENV)) $(JAZZY_PY) -c "$$CHECK_JAZZY" $(JAZZY_RCLPY)
	$(call ros_env,$(VENV)) $(JAZZY_PY) -m pytest $(ROS_TESTS)

demo: setup
	$(VENV)/bin/space-clip-demo

benchmark: setup
	$(VENV)/bin/space-clip-benchmark --compare

clean:
	rm -rf $(VENV) $(JAZZY_VENV) build install log *.egg-info

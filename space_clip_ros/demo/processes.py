"""Nodes started as their own processes, with their output in a log file, stopped cleanly.

Each child runs in a session of its own, so a Ctrl-C in the terminal reaches only the demo, which
then stops the children in order (the camera first, then the depth node) instead of all at once.
Stopping is SIGINT (what ``ros2 launch`` sends; rclpy shuts down), then SIGTERM, then SIGKILL,
each with a timeout. :class:`ProcessGroup` stops whatever it started when its ``with`` block ends,
whether normally or by an exception.

The tests start their nodes with the same pieces (test/ros_helpers.py): :class:`ManagedProcess`,
:func:`depth_node_command` (the launch file's command line), :func:`node_environment` and
:func:`wait_until`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

SIGINT_TIMEOUT_S = 10.0
SIGTERM_TIMEOUT_S = 5.0


def find_console_script(name: str) -> str:
    """A console script of this environment: beside the running Python first, then on PATH."""
    sibling = Path(sys.executable).with_name(name)
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script '{name}' not found beside {sys.executable} or on PATH "
                                "(is the package installed? pip install -e .)")
    return found


def node_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a node: unbuffered, uncoloured logs; DDS kept on this machine
    unless the user chose otherwise."""
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.update({"PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0", "RCUTILS_COLORIZED_OUTPUT": "0"})
    env.update(extra or {})
    return env


def ros_argument_value(value: Any) -> str:
    """A value for ``-p name:=VALUE``: rcl reads it as YAML, so strings are quoted (JSON is YAML)."""
    return json.dumps(value)


def depth_node_command(
    launch: ModuleType,
    *,
    image: str,
    camera_info: str,
    params_file: Path | str,
    checkpoint: str,
    device: str,
    namespace: str = "",
    overrides: Mapping[str, Any] | None = None,
    executable: str | None = None,
) -> list[str]:
    """The depth node's command line as the launch file (``launch``, a loaded module) starts it: its
    node name, remappings and parameters, in ``namespace``, plus ``overrides`` (extra ``-p``).

    ``executable``: the console script (default: the launch file's).
    """
    command = [find_console_script(executable or launch.EXECUTABLE), "--ros-args", "-r", f"__node:={launch.NODE_NAME}"]
    if namespace:
        command += ["-r", f"__ns:={namespace}"]
    for source, target in launch.node_remappings(image, camera_info):
        command += ["-r", f"{source}:={target}"]
    for entry in launch.node_parameters(str(params_file), checkpoint, device):
        if isinstance(entry, str):
            command += ["--params-file", entry]
        else:
            for name, value in entry.items():
                command += ["-p", f"{name}:={ros_argument_value(value)}"]
    for name, value in (overrides or {}).items():
        command += ["-p", f"{name}:={ros_argument_value(value)}"]
    return command


class ManagedProcess:
    """One child process whose stdout and stderr go to ``log_path`` (run in ``cwd`` when given)."""

    def __init__(
        self, name: str, command: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        logger.debug("starting %s: %s", name, " ".join(self.command))
        # A file, not a pipe: nobody has to drain it for the node to keep running.
        self.process = subprocess.Popen(
            self.command, stdout=self._log_file, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def _wait(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, sigint_timeout: float = SIGINT_TIMEOUT_S, sigterm_timeout: float = SIGTERM_TIMEOUT_S) -> int:
        """SIGINT, then SIGTERM, then SIGKILL (to its whole session) until it has exited; its exit code."""
        steps = ((signal.SIGINT, sigint_timeout), (signal.SIGTERM, sigterm_timeout))
        for sent, timeout in steps:
            if not self.running:
                break
            logger.debug("sending %s to %s (pid %d)", sent.name, self.name, self.pid)
            self.process.send_signal(sent)
            if self._wait(timeout):
                break
            logger.warning("%s did not exit within %.0f s of %s", self.name, timeout, sent.name)
        if self.running:
            os.killpg(self.pid, signal.SIGKILL)  # its own session: takes any child of it too
            self.process.wait()
        if not self._log_file.closed:
            self._log_file.close()
        return self.process.returncode


class ProcessGroup:
    """Starts processes and stops them all (last started first) when the ``with`` block ends."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def start(self, name: str, command: Sequence[str], log_path: Path, env: Mapping[str, str]) -> ManagedProcess:
        process = ManagedProcess(name, command, log_path, env)
        self.processes.append(process)
        return process

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for process in reversed(self.processes):
            codes[process.name] = process.stop()
        return codes

    def crashed(self) -> ManagedProcess | None:
        """The first process that has exited on its own, if any."""
        return next((p for p in self.processes if not p.running), None)


def wait_until(
    condition: Callable[[], T], timeout: float, group: ProcessGroup | None = None, poll_s: float = 0.05
) -> T:
    """Poll ``condition()`` until it returns something truthy (returned) or ``timeout`` s pass (its
    last, falsy value is returned); stops early when a process of ``group`` exits, so a crashed
    node is reported at once, not after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if group is not None and group.crashed() is not None:
            return result
        time.sleep(poll_s)
    return condition()

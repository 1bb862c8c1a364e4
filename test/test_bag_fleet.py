"""space-clip-bag over many bags (bags/fleet.py): the split, reruns, summaries, and two real processes.

The processes are started the way torchrun starts them (RANK / WORLD_SIZE / LOCAL_RANK /
LOCAL_WORLD_SIZE in the environment) on real bags written like test_bag_tool's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_bag_tool import read_bag, tiny_checkpoint, write_camera_bag  # noqa: F401 - tiny_checkpoint is a fixture

from space_clip_ros.bags import fleet
from space_clip_ros.bags.bag_depth import BagDepthReport
from space_clip_ros.bags.fleet import FleetError, FleetRank

IMAGE_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/color/depth/image"


def test_rank_from_the_environment():
    assert FleetRank.from_env({}) == FleetRank(0, 1, 0, 1)
    assert FleetRank.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}) == (
        FleetRank(3, 4, 1, 2))
    assert FleetRank.from_env({"RANK": "1", "WORLD_SIZE": "2"}) == FleetRank(1, 2, 1, 2)
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x"}):
        with pytest.raises(FleetError):
            FleetRank.from_env(bad)


def test_the_split_is_deterministic_and_balanced_by_size():
    sizes = {Path(f"b{i}"): size for i, size in enumerate([90, 10, 50, 40, 30, 20, 60, 70])}
    shares = fleet.assign(list(sizes), 3, size=sizes.__getitem__)
    assert shares == fleet.assign(list(reversed(list(sizes))), 3, size=sizes.__getitem__)  # input order is irrelevant
    assert sorted(b for share in shares for b in share) == sorted(sizes)
    loads = [sum(sizes[b] for b in share) for share in shares]
    assert max(loads) - min(loads) <= max(sizes.values())
    assert fleet.assign([Path("a")], 2, size=lambda _: 1) == [[Path("a")], []]


def test_device_and_threads_per_process():
    two = FleetRank(1, 2, 1, 2)
    assert fleet.device_and_threads("auto", two, cuda_devices=4, physical_cores=16) == ("cuda:1", None)
    assert fleet.device_and_threads("auto", two, cuda_devices=0, physical_cores=16) == ("auto", 8)
    assert fleet.device_and_threads("cpu", FleetRank(0, 4, 0, 4), cuda_devices=0, physical_cores=2) == ("cpu", 1)
    assert fleet.device_and_threads("auto", FleetRank(), cuda_devices=1, physical_cores=2) == ("cuda", None)


def test_bags_of_a_folder_and_of_a_list(tmp_path):
    folder = tmp_path / "recordings"
    for name in ("b", "a"):
        write_camera_bag(folder / name, frames=1)
    (folder / "c.mcap").write_bytes(b"")  # a single storage file is a bag too
    (folder / "notes.txt").write_text("not a bag")
    assert fleet.find_bags(folder) == [folder / "a", folder / "b", folder / "c.mcap"]
    assert fleet.is_fleet_input(folder) and not fleet.is_fleet_input(folder / "a")
    listing = tmp_path / "bags.txt"
    listing.write_text("# the day's runs\nrecordings/b\n\n" + str(folder / "a") + "  # absolute\n")
    assert fleet.find_bags(listing) == [folder / "a", folder / "b"] and fleet.is_fleet_input(listing)
    listing.write_text("recordings/missing\n")
    with pytest.raises(FleetError, match="is not a bag"):
        fleet.find_bags(listing)
    write_camera_bag(tmp_path / "other" / "a", frames=1)
    listing.write_text("recordings/a\nother/a\n")
    with pytest.raises(FleetError, match="would both be written to a"):
        fleet.find_bags(listing)


def test_a_rerun_skips_finished_bags_and_redoes_partial_ones(tmp_path):
    bags = [tmp_path / "in" / name for name in ("a", "b", "c")]
    out = tmp_path / "out"
    done: list[str] = []

    def process(bag: Path, output: Path) -> BagDepthReport:
        if bag.name == "c":
            raise ValueError("no such topic")
        output.mkdir(parents=True)
        (output / "metadata.yaml").write_text("bag")
        done.append(bag.name)
        report = BagDepthReport(bag, output)
        report.images = report.depth_images = 3
        return report

    (out / "a").mkdir(parents=True)  # finished by an earlier run
    (out / ".b.partial").mkdir()  # left half written by an interrupted one
    (out / ".b.partial" / "junk").write_text("half")
    report = fleet.run_rank(bags, out, process, FleetRank(), progress=False)
    assert done == ["b"]
    assert [(b.status, b.depth_images) for b in report.bags] == [("skipped", 0), ("done", 3), ("failed", 0)]
    assert "no such topic" in report.bags[2].error
    assert (out / "b" / "metadata.yaml").exists() and not (out / ".b.partial").exists()
    assert not (out / ".c.partial").exists() and not (out / "c").exists()
    lines = fleet.rank_summary_lines(report)
    assert "1 done, 1 skipped (finished before), 0 damaged, 1 failed; 3 frame(s)" in lines[0]


def test_reports_are_gathered_into_one_summary(tmp_path):
    first, second = fleet.RankReport(0, 2, "cpu"), fleet.RankReport(1, 2, "cpu")
    first.bags = [fleet.BagResult("a", "out/a", "done", images=4, depth_images=4)]
    second.bags = [fleet.BagResult("b", "out/b", "failed", error="BagOpenError: damaged")]
    fleet.write_rank_report(tmp_path, "run-x", first)
    assert fleet.gather_reports(tmp_path, "run-x", 2, wait_s=0.1)[1] is None  # rank 1 not there yet
    fleet.write_rank_report(tmp_path, "run-x", second)
    summary = fleet.combined_summary(fleet.gather_reports(tmp_path, "run-x", 2, wait_s=0.1))
    assert (summary["bags"], summary["done"], summary["failed"], summary["frames"]) == (2, 1, 1, 4)
    assert "2 bag(s): 1 done, 0 skipped, 0 damaged, 1 failed; 4 frame(s)" in fleet.combined_summary_lines(summary)[0]
    assert fleet.run_id({"TORCHELASTIC_RUN_ID": "abc"}) == "run-abc"
    assert fleet.run_id({"TORCHELASTIC_RUN_ID": "none"}) == f"ppid-{os.getppid()}"


def _launch(world_size: int, args: list[str], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """``world_size`` processes of space-clip-bag with torchrun's variables but no torchrun (one node, no
    rendezvous: the summary is gathered through the report files)."""
    processes = []
    for rank in range(world_size):
        env = {key: value for key, value in os.environ.items() if key not in ("MASTER_ADDR", "MASTER_PORT")}
        env.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                    "LOCAL_WORLD_SIZE": str(world_size), "PYTHONUNBUFFERED": "1"})
        log = open(tmp_path / f"rank{rank}.log", "w")  # noqa: SIM115 - closed below
        processes.append((subprocess.Popen([sys.executable, "-m", "space_clip_ros.cli.bag", *args], env=env,
                                           stdout=log, stderr=subprocess.STDOUT), log))
    results = []
    for rank, (process, log) in enumerate(processes):
        code = process.wait(timeout=600)
        log.close()
        results.append(subprocess.CompletedProcess(process.args, code, (tmp_path / f"rank{rank}.log").read_text()))
    return results


def _torchrun(world_size: int, args: list[str]) -> subprocess.CompletedProcess:
    """torchrun from this environment (a free rendezvous port of its own: --standalone)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", str(world_size), "-m",
                           "space_clip_ros.cli.bag", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow  # two processes that each load torch and the model, twice
def test_two_processes_split_the_bags_and_a_rerun_skips_them(tmp_path, tiny_checkpoint):  # noqa: F811
    folder = tmp_path / "recordings"
    frames = {"run_a": 3, "run_b": 2, "run_c": 4, "run_d": 1, "run_e": 2}
    for name, count in frames.items():
        write_camera_bag(folder / name, frames=count)
    out = tmp_path / "out"
    args = [str(folder), str(out), "--image-topic", IMAGE_TOPIC, "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--backend", "torch", "--batch-size", "2", "--no-progress"]
    # torchrun: the summary through torch.distributed (gloo).
    result = _torchrun(2, args)
    assert result.returncode == 0, result.stdout + result.stderr
    for name, count in frames.items():
        messages, _ = read_bag(out / name)
        assert len(messages[DEPTH_TOPIC]) == count, name
    assert not list(out.glob(".*.partial"))
    reports = [json.loads(p.read_text()) for p in sorted((out / ".fleet").glob("*/rank-*.json"))]
    assert [r["rank"] for r in reports] == [0, 1]
    split = [sorted(Path(b["input"]).name for b in r["bags"]) for r in reports]
    expected = fleet.assign(fleet.find_bags(folder), 2)
    assert split == [[b.name for b in share] for share in expected]
    assert all(split), "both processes had work"
    assert "rank 1/2 (cpu): " in result.stdout and "all 2 process(es)" in result.stdout
    summary = json.loads((out / fleet.SUMMARY_FILE).read_text())
    assert (summary["bags"], summary["done"], summary["failed"], summary["frames"]) == (5, 5, 0, sum(frames.values()))

    # A rerun, started as plain processes (the summary through the report files): everything is skipped.
    (out / ".run_c.partial").mkdir()  # as if an interrupted run had left it: ignored, run_c is finished
    results = _launch(2, args, tmp_path)
    assert [r.returncode for r in results] == [0, 0], "\n".join(r.stdout for r in results)
    summary = json.loads((out / fleet.SUMMARY_FILE).read_text())
    assert (summary["processes_reported"], summary["skipped"], summary["done"], summary["frames"]) == (2, 5, 0, 0)
    assert "all 2 process(es): 5 bag(s): 0 done, 5 skipped" in results[0].stdout


def test_one_process_over_a_list_in_process(tmp_path, tiny_checkpoint, monkeypatch, capsys):  # noqa: F811
    from space_clip_ros.cli import bag as bag_cli

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    write_camera_bag(tmp_path / "x", frames=2)
    write_camera_bag(tmp_path / "y", frames=1, storage="sqlite3")
    listing = tmp_path / "bags.txt"
    listing.write_text("x\ny\n")
    out = tmp_path / "out"
    code = bag_cli.main([str(listing), str(out), "--image-topic", "/wrong/topic", "--checkpoint", str(tiny_checkpoint),
                         "--device", "cpu", "--backend", "torch", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == bag_cli.EXIT_USAGE and "2 failed" in printed  # a bag without the topic fails alone
    code = bag_cli.main([str(listing), str(out), "--image-topic", IMAGE_TOPIC, "--checkpoint", str(tiny_checkpoint),
                         "--device", "cpu", "--backend", "torch", "--no-progress"])
    assert code == bag_cli.EXIT_OK
    assert len(read_bag(out / "x")[0][DEPTH_TOPIC]) == 2 and len(read_bag(out / "y")[0][DEPTH_TOPIC]) == 1

"""Many bags, many processes: ``space-clip-bag`` over a folder of bags or a list of them.

Under ``torchrun`` (or anything that sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``LOCAL_WORLD_SIZE``) each process takes its share of the bags and writes its own output bags; no
``torch.distributed`` is needed, the environment says who is who. A single process (no variables)
takes every bag.

* **Split** (:func:`assign`): deterministic, by size. The bags are sorted by size (largest first,
  then by path) and each goes to the process with the least bytes so far (ties: the lowest rank),
  so every process computes the same split and their loads differ by at most about one bag.
* **Where** (:func:`device_and_threads`): ``--device auto`` on a machine with GPUs gives process
  ``LOCAL_RANK`` the GPU of that index; on a CPU each of the node's processes gets an equal share
  of the physical cores as its threads.
* **Rerun** (:func:`run_rank`): a bag is written under ``OUT/.<name>.partial`` and renamed to
  ``OUT/<name>`` when it is complete, so an existing ``OUT/<name>`` is finished and skipped, and a
  ``.partial`` left by an interrupted run is removed and redone.
* **Progress and summary**: one progress bar per process (tqdm line ``LOCAL_RANK``), its own
  summary when it is done, and a report file ``OUT/.fleet/<run>/rank-<N>.json``. Rank 0 prints the
  combined summary (bags, frames, failures), also written to ``OUT/fleet_summary.json``: under
  torchrun (``MASTER_ADDR`` / ``MASTER_PORT`` set) the reports are gathered with
  ``torch.distributed`` over gloo (CPU, no GPU memory), otherwise rank 0 waits for the others'
  files. ``<run>`` is torchrun's ``TORCHELASTIC_RUN_ID`` when it has one (``--rdzv-id``), else the
  parent process id (one launcher on one machine); each process removes its own report of an
  earlier run with the same id when it starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from space_clip_ros.bags.reading import storage_kind
from space_clip_ros.fileio import atomic_write_text

if TYPE_CHECKING:
    from space_clip_ros.bags.bag_depth import BagDepthReport

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"
REPORTS_FOLDER = ".fleet"
SUMMARY_FILE = "fleet_summary.json"
#: How long rank 0 waits for the other processes' reports once its own bags are done.
SUMMARY_WAIT_S = 3600.0
STATUSES = ("done", "skipped", "damaged", "failed")


class FleetError(ValueError):
    """The inputs or the process environment do not allow the job; says why."""


@dataclass(frozen=True)
class FleetRank:
    """Who this process is among the fleet's (torchrun's environment variables)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FleetRank:
        env = os.environ if env is None else env

        def number(name: str, default: int) -> int:
            text = env.get(name, "")
            try:
                return int(text) if text != "" else default
            except ValueError as exc:
                raise FleetError(f"environment variable {name}={text!r} is not an integer") from exc

        world = number("WORLD_SIZE", 1)
        rank = number("RANK", 0)
        local_world = number("LOCAL_WORLD_SIZE", world)
        local_rank = number("LOCAL_RANK", rank % max(local_world, 1))
        if world < 1 or not 0 <= rank < world or local_world < 1 or not 0 <= local_rank < local_world:
            raise FleetError(f"inconsistent process environment: RANK={rank} WORLD_SIZE={world} "
                             f"LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_world}")
        return cls(rank, world, local_rank, local_world)


def is_bag(path: Path) -> bool:
    """A storage file (.mcap / .db3), or a directory with metadata.yaml or storage files in it."""
    if path.is_file():
        return storage_kind(path) is not None
    if not path.is_dir():
        return False
    return (path / "metadata.yaml").exists() or any(storage_kind(p) for p in path.iterdir() if p.is_file())


def is_fleet_input(path: Path) -> bool:
    """Whether ``space-clip-bag``'s IN names many bags: a list file, or a folder without metadata.yaml
    holding bag folders. (A folder of storage files alone is one bag, perhaps without its
    metadata.yaml, as the bag reader takes it: list single-file bags in a list file instead.)"""
    if path.is_file():
        return storage_kind(path) is None
    if not path.is_dir() or (path / "metadata.yaml").exists():
        return False
    return any(entry.is_dir() and is_bag(entry) for entry in path.iterdir() if not entry.name.startswith("."))


def find_bags(source: str | os.PathLike) -> list[Path]:
    """The bags of a folder (its entries that are bags: bag folders, and storage files beside them) or
    of a list file (one path per line, relative to the list's folder; blank lines and ``#`` comments
    skipped), sorted by path."""
    source = Path(source)
    if source.is_dir():
        bags = [entry for entry in source.iterdir() if not entry.name.startswith(".") and is_bag(entry)]
    elif source.is_file():
        bags = []
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            path = Path(text) if Path(text).is_absolute() else source.parent / text
            if not is_bag(path):
                raise FleetError(f"{source}:{number}: {text} is not a bag (a directory with metadata.yaml or "
                                 "storage files, or a .mcap / .db3 file)")
            bags.append(path)
    else:
        raise FleetError(f"{source} does not exist")
    bags = sorted(set(bags))
    if not bags:
        raise FleetError(f"{source} holds no bags")
    names: dict[str, Path] = {}
    for bag in bags:
        other = names.setdefault(output_name(bag), bag)
        if other != bag:
            raise FleetError(f"{other} and {bag} would both be written to {output_name(bag)}; rename one")
    return bags


def output_name(bag: Path) -> str:
    """The output bag's folder name: the input's (a storage file's without its suffixes)."""
    return bag.name.split(".", 1)[0] if bag.is_file() else bag.name


def bag_size(bag: Path) -> int:
    """Bytes of a bag (every file in its folder, or the file)."""
    if bag.is_file():
        return bag.stat().st_size
    return sum(p.stat().st_size for p in bag.rglob("*") if p.is_file())


def assign(bags: Sequence[Path], world_size: int, size: Callable[[Path], int] = bag_size) -> list[list[Path]]:
    """The bags of each rank (see the module notes: largest first to the least loaded; deterministic)."""
    loads = [0] * world_size
    shares: list[list[Path]] = [[] for _ in range(world_size)]
    for bag in sorted(bags, key=lambda b: (-size(b), str(b))):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shares[rank].append(bag)
        loads[rank] += size(bag)
    return [sorted(share) for share in shares]


def device_and_threads(device: str, fleet: FleetRank, cuda_devices: int, physical_cores: int) -> tuple[str, int | None]:
    """This process's device and CPU threads: ``auto`` with GPUs -> ``cuda:<LOCAL_RANK mod GPUs>``; on a
    CPU an equal share of the physical cores for each of the node's processes (None: one process,
    the default threads)."""
    if device == "auto" and cuda_devices > 0:
        return (f"cuda:{fleet.local_rank % cuda_devices}" if fleet.local_world_size > 1 else "cuda"), None
    if fleet.local_world_size > 1:
        return device, max(1, physical_cores // fleet.local_world_size)
    return device, None


@dataclass
class BagResult:
    """What happened to one bag."""

    input: str
    output: str
    status: str  # STATUSES: done, skipped (output existed), damaged (input read up to damage), failed
    images: int = 0
    depth_images: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class RankReport:
    """One process's work."""

    rank: int
    world_size: int
    device: str = ""
    bags: list[BagResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for bag in self.bags if bag.status == status)

    @property
    def frames(self) -> int:
        return sum(bag.depth_images for bag in self.bags)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> RankReport:
        bags = [BagResult(**bag) for bag in data.get("bags", [])]
        return cls(rank=data["rank"], world_size=data["world_size"], device=data.get("device", ""), bags=bags,
                   seconds=data.get("seconds", 0.0))


def partial_path(output_dir: Path, name: str) -> Path:
    return output_dir / f"{PARTIAL_PREFIX}{name}{PARTIAL_SUFFIX}"


#: ``process(input bag, output bag path) -> BagDepthReport``: one bag's job (raises the bag tool's errors).
Process = Callable[[Path, Path], "BagDepthReport"]


def run_rank(
    bags: Sequence[Path],
    output_dir: Path,
    process: Process,
    fleet: FleetRank,
    *,
    device: str = "",
    progress: bool = True,
    errors: tuple[type[BaseException], ...] = (ValueError, RuntimeError, OSError),
) -> RankReport:
    """Do this process's bags (module notes: finished outputs skipped, partial ones redone)."""
    started = time.perf_counter()
    report = RankReport(fleet.rank, fleet.world_size, device)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(bags), unit="bag", desc=f"rank {fleet.rank}", position=fleet.local_rank, leave=True,
              disable=not progress, dynamic_ncols=True) as bar:
        for bag in bags:
            name = output_name(bag)
            final, partial = output_dir / name, partial_path(output_dir, name)
            result = BagResult(str(bag), str(final), "done")
            if final.exists():
                result.status = "skipped"
            else:
                if partial.exists():
                    logger.info("rank %d: removing %s, left by an interrupted run", fleet.rank, partial)
                    shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
                began = time.perf_counter()
                try:
                    bag_report = process(bag, partial)
                except errors as exc:
                    result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
                    logger.error("rank %d: %s failed: %s", fleet.rank, bag, exc)
                    if partial.exists():
                        shutil.rmtree(partial, ignore_errors=True)
                else:
                    os.replace(partial, final)  # complete: now it counts as finished
                    result.images, result.depth_images = bag_report.images, bag_report.depth_images
                    if bag_report.input_damaged:
                        result.status, result.error = "damaged", str(bag_report.damage)
                result.seconds = round(time.perf_counter() - began, 3)
            report.bags.append(result)
            bar.update(1)
            bar.set_postfix(frames=report.frames, failed=report.count("failed"))
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def run_id(env: Mapping[str, str] | None = None) -> str:
    """Identity of this launch, shared by its processes (module notes)."""
    env = os.environ if env is None else env
    elastic = env.get("TORCHELASTIC_RUN_ID", "")
    return f"run-{elastic}" if elastic and elastic != "none" else f"ppid-{os.getppid()}"


def reports_folder(output_dir: Path, run: str) -> Path:
    return output_dir / REPORTS_FOLDER / run


def rank_report_path(output_dir: Path, run: str, rank: int) -> Path:
    return reports_folder(output_dir, run) / f"rank-{rank}.json"


def clear_rank_report(output_dir: Path, run: str, rank: int) -> None:
    """Remove this rank's report of an earlier run with the same id (at start, before rank 0 reads)."""
    rank_report_path(output_dir, run, rank).unlink(missing_ok=True)


def write_rank_report(output_dir: Path, run: str, report: RankReport) -> Path:
    path = rank_report_path(output_dir, run, report.rank)
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def can_gather_with_torch_distributed(fleet: FleetRank, env: Mapping[str, str] | None = None) -> bool:
    """torchrun's rendezvous is there (MASTER_ADDR and MASTER_PORT) and there is more than one process."""
    env = os.environ if env is None else env
    return fleet.world_size > 1 and bool(env.get("MASTER_ADDR")) and bool(env.get("MASTER_PORT"))


def gather_with_torch_distributed(report: RankReport, fleet: FleetRank) -> list[RankReport | None]:
    """Every rank's report through a gloo process group (all ranks must call this)."""
    import datetime

    import torch.distributed as dist

    started_here = not dist.is_initialized()
    if started_here:
        dist.init_process_group("gloo", rank=fleet.rank, world_size=fleet.world_size,
                                timeout=datetime.timedelta(seconds=SUMMARY_WAIT_S))
    try:
        gathered: list[dict | None] = [None] * fleet.world_size
        dist.all_gather_object(gathered, report.to_dict())
    finally:
        if started_here:
            dist.destroy_process_group()
    return [None if data is None else RankReport.from_dict(data) for data in gathered]


def gather_reports(output_dir: Path, run: str, world_size: int, wait_s: float = SUMMARY_WAIT_S,
                   poll_s: float = 0.5) -> list[RankReport | None]:
    """Every rank's report of this run (None for a rank whose report did not come within ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while True:
        paths = [rank_report_path(output_dir, run, rank) for rank in range(world_size)]
        if all(p.exists() for p in paths) or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    reports: list[RankReport | None] = []
    for path in paths:
        try:
            reports.append(RankReport.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError):
            reports.append(None)
    return reports


def rank_summary_lines(report: RankReport) -> list[str]:
    line = (f"rank {report.rank}/{report.world_size} ({report.device or 'device ?'}): {len(report.bags)} bag(s): "
            f"{report.count('done')} done, {report.count('skipped')} skipped (finished before), "
            f"{report.count('damaged')} damaged, {report.count('failed')} failed; {report.frames} frame(s) with "
            f"depth in {report.seconds:.1f} s")
    failures = [f"  failed: {bag.input}: {bag.error}" for bag in report.bags if bag.status == "failed"]
    damaged = [f"  damaged input: {bag.input}: {bag.error}" for bag in report.bags if bag.status == "damaged"]
    return [line, *failures, *damaged]


def combined_summary(reports: Sequence[RankReport | None]) -> dict:
    present = [r for r in reports if r is not None]
    bags = [bag for r in present for bag in r.bags]
    return {
        "processes": len(reports),
        "processes_reported": len(present),
        "missing_ranks": [rank for rank, r in enumerate(reports) if r is None],
        "bags": len(bags),
        **{status: sum(1 for bag in bags if bag.status == status) for status in STATUSES},
        "frames": sum(bag.depth_images for bag in bags),
        "seconds_max": max((r.seconds for r in present), default=0.0),
        "failures": [{"input": bag.input, "error": bag.error} for bag in bags if bag.status == "failed"],
        "ranks": [r.to_dict() for r in present],
    }


def combined_summary_lines(summary: Mapping) -> list[str]:
    lines = [
        f"all {summary['processes']} process(es): {summary['bags']} bag(s): {summary['done']} done, "
        f"{summary['skipped']} skipped, {summary['damaged']} damaged, {summary['failed']} failed; "
        f"{summary['frames']} frame(s) with depth; slowest process {summary['seconds_max']:.1f} s"
    ]
    if summary["missing_ranks"]:
        lines.append(f"  no report from rank(s) {summary['missing_ranks']} (still running, or failed before the end)")
    lines += [f"  failed: {item['input']}: {item['error']}" for item in summary["failures"]]
    return lines

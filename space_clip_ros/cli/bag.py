"""space-clip-bag: add SPACE-CLIP depth, depth camera info and point clouds to a recorded bag.

Examples:
  space-clip-bag run1 run1_depth --image-topic /camera/color/image_raw --checkpoint best
  space-clip-bag run1.mcap out --image-topic /camera/image_raw/compressed --batch-size 8
  space-clip-bag run1 out --image-topic /cam/image --camera-info-topic /cam/info \\
      --depth-topic /cam/depth --points-topic /cam/cloud --storage sqlite3
  space-clip-bag run1 out --image-topic /cam/image --confidence --points-min-confidence 0.3 \\
      --flying-pixel-threshold 0.04 --out-of-range rep117 --scale-anchor ground_plane --camera-height 0.3

IN is a rosbag2 directory (MCAP or SQLite3) or a single .mcap / .db3 file. OUT is a new bag
directory holding every message of IN unchanged (same bytes, log times, topics, types and QoS)
plus, for every image of --image-topic, a depth image (REP 118), its CameraInfo and a point
cloud, all stamped with the image's header stamp and logged at the image's log time; and, when
asked for, the depth node's other outputs (depth/confidence, depth/colored,
clip/image_embedding_stamped and clip/image_embedding) under the image's namespace. The output
flags are the node's output parameters of the same names (docs/ros_node.md).

Many bags: IN is a folder of bags or a text file listing them (one path per line), OUT a folder
that gets one output bag per input (OUT/<name>). Under torchrun the processes split the bags
between them (one process per GPU, or per share of the CPU cores); a rerun skips the bags already
finished and redoes those an interrupted run left half written (bags/fleet.py):
  space-clip-bag recordings/ out/ --image-topic /camera/color/image_raw --checkpoint best
  torchrun --nproc-per-node 4 -m space_clip_ros.cli.bag recordings/ out/ --image-topic /cam/image

Exit status: 0 done; 1 the model could not be loaded; 2 bad arguments, topics or paths (many bags:
a bag failed); 3 the input bag is damaged (OUT holds everything read before the damage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    EXIT_OK,
    EXIT_USAGE,
    add_inference_arguments,
    add_model_arguments,
    add_output_arguments,
    output_values,
    predictor_from_args,
    setup_logging,
    tool_parser,
)

if TYPE_CHECKING:
    from ..bags.bag_depth import BagDepthOptions

EXIT_MODEL = 1
EXIT_DAMAGED_INPUT = 3

logger = logging.getLogger("space_clip_ros.bag")


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser("space-clip-bag", __doc__)
    parser.add_argument("input", metavar="IN", help="input bag directory or .mcap / .db3 file; or a folder of bags, "
                        "or a text file listing bags, one per line")
    parser.add_argument("output", metavar="OUT", help="output bag directory (must not exist unless --overwrite); for "
                        "many bags the folder of output bags")
    topics = parser.add_argument_group("topics")
    topics.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    topics.add_argument("--camera-info-topic", help="its CameraInfo (default: <namespace>/camera_info if present)")
    topics.add_argument("--depth-topic", help="output depth image (default: <namespace>/depth/image)")
    topics.add_argument("--depth-info-topic", help="output CameraInfo (default: <namespace>/depth/camera_info)")
    topics.add_argument("--points-topic", help="output PointCloud2 (default: <namespace>/points)")
    topics.add_argument("--anchor-points-topic",
                        help="PointCloud2 of metric anchor points in the camera's optical frame, for --scale-anchor "
                             "sparse_points (default: <namespace>/anchor_points)")
    add_model_arguments(parser)
    run = parser.add_argument_group("inference")
    add_inference_arguments(run)
    run.add_argument("--batch-size", type=int, default=4, help="images per model call (default: 4)")
    output = parser.add_argument_group("outputs (the depth node's parameters of the same names)")
    add_output_arguments(output)
    output.add_argument("--storage", choices=("mcap", "sqlite3"), help="output storage (default: the input's)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def options_from_args(args: argparse.Namespace) -> BagDepthOptions:
    from ..bags.bag_depth import BagDepthOptions

    return BagDepthOptions(
        image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic,
        depth_topic=args.depth_topic,
        depth_info_topic=args.depth_info_topic,
        points_topic=args.points_topic,
        anchor_points_topic=args.anchor_points_topic,
        batch_size=args.batch_size,
        outputs=output_values(args),
        storage=args.storage,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.batch_size < 1 or (args.points_stride is not None and args.points_stride < 0):
        print("space-clip-bag: error: --batch-size must be >= 1 and --points-stride >= 0 (0: auto)", file=sys.stderr)
        return EXIT_USAGE

    # torch (through the predictor and the bag pipeline) is imported after argument errors are reported.
    from ..bags.bag_depth import BagDepthError, add_depth_to_bag
    from ..bags.fleet import is_fleet_input
    from ..bags.reading import BagOpenError
    from ..bags.writing import BagWriteError
    from ..model import CheckpointError

    if is_fleet_input(Path(args.input)):
        return run_many(args)
    try:
        predictor = predictor_from_args(args, torch_only=needs_torch(args))
    except (CheckpointError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"space-clip-bag: error: cannot load the model: {exc}", file=sys.stderr)
        return EXIT_MODEL
    logger.info("%s", predictor.describe())
    try:
        report = add_depth_to_bag(args.input, args.output, predictor, options_from_args(args))
    except (BagDepthError, BagOpenError, BagWriteError) as exc:
        print(f"space-clip-bag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(report.summary_lines()))
    if report.input_damaged:
        expected = f" of {report.messages_expected}" if report.messages_expected is not None else ""
        print(
            f"space-clip-bag: error: the input bag is damaged: {report.damage}\n"
            f"  recovered {report.messages_read}{expected} message(s) ({report.images} image(s), "
            f"{report.depth_images} with depth); {report.output_path} holds all of them",
            file=sys.stderr,
        )
        return EXIT_DAMAGED_INPUT
    return EXIT_OK


def needs_torch(args: argparse.Namespace) -> bool:
    """Whether the outputs asked for need the torch backend (the confidence map runs auxiliary heads)."""
    values = output_values(args)
    return bool(values.get("publish_confidence") or (values.get("points_min_confidence") or 0.0) > 0)


def run_many(args: argparse.Namespace) -> int:
    """Many bags (IN a folder or a list): this process's share of them (bags/fleet.py)."""
    import torch

    from ..bags.bag_depth import BagDepthError, add_depth_to_bag
    from ..bags.fleet import (
        SUMMARY_FILE,
        BagResult,
        FleetError,
        FleetRank,
        RankReport,
        assign,
        can_gather_with_torch_distributed,
        clear_rank_report,
        combined_summary,
        combined_summary_lines,
        device_and_threads,
        find_bags,
        gather_reports,
        gather_with_torch_distributed,
        output_name,
        rank_summary_lines,
        run_id,
        run_rank,
        write_rank_report,
    )
    from ..bags.reading import BagOpenError
    from ..bags.writing import BagWriteError
    from ..fileio import atomic_write_text
    from ..inference.runtime.options import physical_cores
    from ..model import CheckpointError

    try:
        fleet = FleetRank.from_env()
        mine = assign(find_bags(args.input), fleet.world_size)[fleet.rank]
    except FleetError as exc:
        print(f"space-clip-bag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    output_dir, run = Path(args.output), run_id()
    clear_rank_report(output_dir, run, fleet.rank)
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device, threads = device_and_threads(args.device, fleet, cuda_devices, physical_cores())
    if threads is not None:
        torch.set_num_threads(threads)
    report = RankReport(fleet.rank, fleet.world_size, device)
    if mine:
        try:
            predictor = predictor_from_args(args, device=device, threads=threads, torch_only=needs_torch(args))
        except (CheckpointError, ValueError, FileNotFoundError, RuntimeError) as exc:
            print(f"space-clip-bag: error: rank {fleet.rank}: cannot load the model: {exc}", file=sys.stderr)
            report.bags = [BagResult(str(bag), str(output_dir / output_name(bag)), "failed", error=f"model: {exc}")
                           for bag in mine]
            write_rank_report(output_dir, run, report)
            if can_gather_with_torch_distributed(fleet):
                gather_with_torch_distributed(report, fleet)  # the others wait for this rank's report
            return EXIT_MODEL
        logger.info("rank %d/%d: %d bag(s), %s", fleet.rank, fleet.world_size, len(mine), predictor.describe())
        options = dataclasses.replace(options_from_args(args), overwrite=True, progress=False)
        report = run_rank(mine, output_dir, lambda bag, out: add_depth_to_bag(bag, out, predictor, options), fleet,
                          device=str(predictor.device), progress=not args.no_progress,
                          errors=(BagDepthError, BagOpenError, BagWriteError))
    write_rank_report(output_dir, run, report)
    print("\n".join(rank_summary_lines(report)))
    if can_gather_with_torch_distributed(fleet):
        reports = gather_with_torch_distributed(report, fleet)
    elif fleet.rank == 0:
        reports = gather_reports(output_dir, run, fleet.world_size)
    if fleet.rank == 0:
        summary = combined_summary(reports)
        atomic_write_text(output_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        print("\n".join(combined_summary_lines(summary)))
    if report.count("failed"):
        return EXIT_USAGE
    return EXIT_DAMAGED_INPUT if report.count("damaged") else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

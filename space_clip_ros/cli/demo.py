"""space-clip-demo: the depth node end to end on a camera stream it makes itself (no camera, GPU or internet).

It starts the camera simulator (a synthetic scene the camera moves through) and the depth node
(configured by config/depth.yaml, as the launch file starts it), records what the node publishes
for a few seconds, stops everything and writes to --out: side-by-side pictures (camera | depth |
exact depth, with a scale in metres), the point cloud of one frame (point_cloud.ply), and
summary.md / summary.json (frames in and out, latency, device, model), plus the nodes' logs.

Without --checkpoint it first trains a decoder briefly on synthetic scenes (a few minutes on a
CPU, once: it is cached under ~/.cache/space_clip_ros/demo). That decoder knows only synthetic
scenes, and the CLIP backbone has random weights unless --pretrained names real ones.

Examples:
  space-clip-demo                                   # indoor scene, 10 s, ./demo_output/
  space-clip-demo --scene street --seconds 20 --out street_demo
  space-clip-demo --checkpoint runs/nyu/best --pretrained openai --device cuda
  space-clip-demo --quick                           # tiny and fast (what the tests run)

Exit status: 0 done; 1 the demo failed (the message says why, with the nodes' last log lines);
2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .common import EXIT_OK, EXIT_USAGE, setup_logging, tool_parser

EXIT_FAILED = 1

logger = logging.getLogger("space_clip_ros.demo")


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser("space-clip-demo", __doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: ./demo_output)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds to record after the first depth image (default: 10; 3 with --quick)")
    parser.add_argument("--checkpoint", help="decoder checkpoint to use instead of the demo's synthetic one")
    parser.add_argument("--pretrained", help="CLIP backbone weights: an open_clip tag (e.g. openai) or a local file")
    parser.add_argument("--scene", choices=("indoor", "street"), default="indoor", help="synthetic scene kind")
    parser.add_argument("--quick", action="store_true",
                        help="short mode: 160x120 camera, a few frames, a tiny checkpoint trained in seconds")
    parser.add_argument("--no-train", action="store_true",
                        help="without --checkpoint: run an UNTRAINED decoder instead of training one")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--cache-dir", type=Path, help="where demo checkpoints are cached "
                        "(default: ~/.cache/space_clip_ros/demo)")
    parser.add_argument("--width", type=int, default=0, help="camera width (with --height; default by scene)")
    parser.add_argument("--height", type=int, default=0, help="camera height")
    parser.add_argument("--rate", type=float, default=0.0, help="camera frames per second (default: 5; 4 --quick)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _stop_on_sigterm() -> None:
    """SIGTERM/SIGHUP end the demo like Ctrl-C: the ``finally`` blocks stop the nodes."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.width > 0) != (args.height > 0) or (args.seconds is not None and args.seconds <= 0):
        print("space-clip-demo: error: give --width and --height together, and --seconds > 0", file=sys.stderr)
        return EXIT_USAGE
    from ..demo.runner import DemoError, DemoOptions, run_demo  # rclpy and friends after argument errors

    setup_logging(args.verbose)

    options = DemoOptions(
        output_dir=args.out,
        seconds=args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0),
        checkpoint=args.checkpoint,
        pretrained=args.pretrained,
        scene=args.scene,
        quick=args.quick,
        device=args.device,
        train=not args.no_train,
        cache_dir=args.cache_dir,
        width=args.width,
        height=args.height,
        rate_hz=args.rate,
    )
    _stop_on_sigterm()
    try:
        result = run_demo(options)
    except DemoError as exc:
        print(f"space-clip-demo: FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("space-clip-demo: interrupted; the nodes were stopped", file=sys.stderr)
        return EXIT_FAILED
    print()
    print(result.summary.to_markdown())
    print(f"Everything is in {result.output_dir.resolve()}/")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

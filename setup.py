"""ament_python package definition (also a plain pip-installable package)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "space_clip_ros"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        (f"share/{PACKAGE_NAME}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE_NAME}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE_NAME}/config/train", glob("config/train/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="space_clip_ros maintainers",
    maintainer_email="maintainers@space-clip-ros.dev",
    description="SPACE-CLIP monocular metric depth for ROS 2 (frozen CLIP encoder + dual-pathway decoder).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "space-clip-info = space_clip_ros.cli.info:main",
            "depth_node = space_clip_ros.ros.depth_node:main",
            "depth_lifecycle_node = space_clip_ros.ros.depth_lifecycle_node:main",
            "camera_simulator = space_clip_ros.ros.camera_simulator:main",
            "space-clip-train = space_clip_ros.cli.train:main",
            "space-clip-eval = space_clip_ros.cli.evaluate:main",
            "space-clip-predict = space_clip_ros.cli.predict:main",
            "space-clip-benchmark = space_clip_ros.cli.benchmark:main",
            "space-clip-export = space_clip_ros.cli.export:main",
            "space-clip-bag = space_clip_ros.cli.bag:main",
            "space-clip-demo = space_clip_ros.cli.demo:main",
        ],
    },
)

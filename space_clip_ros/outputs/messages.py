"""The small messages of a frame's outputs: the decoded input, the output header, the embedding.

The embedding goes out twice (``publish_embedding``): as std_msgs/Float32MultiArray, which has
no header, and stamped, as a sensor_msgs/Image of encoding 32FC1, height 1 and width D (the
vector's size), little endian, step 4 * D, with the image's header, so that a consumer pairs it
with the depth of the same frame by stamp (docs/ros_node.md says why this type).
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32MultiArray, Header, MultiArrayDimension

from space_clip_ros.msgs.header import copy_stamp
from space_clip_ros.msgs.image import compressed_msg_to_rgb, float_image_msg, image_msg_to_rgb

#: Label of the single dimension of the embedding message's layout.
EMBEDDING_LABEL = "clip_image_embedding"


def decode_image(message: Image | CompressedImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of a raw or compressed image; raises ImageConversionError."""
    if isinstance(message, CompressedImage):
        return compressed_msg_to_rgb(message)
    return image_msg_to_rgb(message)


def output_header(source: Header, frame_id: str) -> Header:
    """The header of every output of a frame: the image's stamp, ``frame_id`` (empty: the image's)."""
    return Header(stamp=copy_stamp(source.stamp), frame_id=frame_id or source.frame_id)


def embedding_message(embedding: np.ndarray) -> Float32MultiArray:
    """A Float32MultiArray holding one embedding vector, its dimension labelled."""
    vector = np.ascontiguousarray(embedding, dtype=np.float32).reshape(-1)
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=EMBEDDING_LABEL, size=vector.size, stride=vector.size)]
    msg.layout.data_offset = 0
    values = array.array("f")
    values.frombytes(vector.tobytes())
    msg.data = values
    return msg


def stamped_embedding_message(embedding: np.ndarray, header: Header) -> Image:
    """One embedding vector as a 1 x D 32FC1 sensor_msgs/Image carrying ``header`` (see the module notes)."""
    vector = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
    return float_image_msg(vector, header)

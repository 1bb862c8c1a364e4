"""Cut an exported SPACE-CLIP graph before the decoder's last (full-resolution) semantic stage.

The cut graph gives what that stage reads (``model.LastStageInputs``: the previous stage's map, the
semantic skip and, where the last stage has one, the structural skip) under the names of
:data:`LAST_STAGE_OUTPUTS`, and the embedding; the stage and the depth head are left out, for a
runtime that runs them itself (ONNX Runtime's ``bf16_last_stage``: torch in bf16).

The cut works on the finished graph, quantised or not, so it shares the export, the int8 encoder and
the calibrated int8 decoder with the whole-graph path (``runtime.graph_cache``): the decoder's
int8 rule keeps the last stage float, so nothing quantised is cut away. Nodes are told apart by the
module path the exporter names them with (``/model/decoder/semantic_stages.3/...``, as
:mod:`.decoder_int8` reads them).
"""

from __future__ import annotations

import os

from ...model import DecoderConfig
from .decoder_int8 import decoder_child, last_stage_child
from .export import EMBEDDING_OUTPUT, LAST_STAGE_OUTPUTS, PIXELS_INPUT


def cut_before_last_stage(source: str | os.PathLike, destination: str | os.PathLike, config: DecoderConfig) -> None:
    """Write the graph at ``source`` cut before the decoder's last stage to ``destination``.

    Raises ValueError when ``source`` is not a whole SPACE-CLIP graph (pixels in, depth and
    embedding out) of a decoder configured as ``config``.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    if [i.name for i in graph.input] != [PIXELS_INPUT] or EMBEDDING_OUTPUT not in [o.name for o in graph.output]:
        raise ValueError(f"{source}: not a whole SPACE-CLIP graph with the embedding (pixels in, depth and "
                         "embedding out), which the last-stage cut needs")
    last = last_stage_child(config)
    tail = [node for node in graph.node if decoder_child(node.name) in (last, "head")]
    tail_names = {node.name for node in tail}
    producers = {output: node for node in graph.node for output in node.output}
    computed = {PIXELS_INPUT}  # tensors that depend on the input (the rest are weights and constants)
    for node in graph.node:  # a graph's nodes are in topological order
        if any(tensor in computed for tensor in node.input):
            computed.update(node.output)
    roles: dict[str, str] = {}  # tensor feeding the last stage -> its LastStageInputs field
    for node in tail:
        for tensor in node.input:
            producer = producers.get(tensor)
            if tensor not in computed or producer is None or producer.name in tail_names:
                continue  # a weight, a constant, or the stage's own work
            child = decoder_child(producer.name) or ""
            if node.op_type == "ConvTranspose" and f"/{last}/up/" in node.name:
                roles[tensor] = LAST_STAGE_OUTPUTS[0]
            elif child.startswith("semantic_proj."):
                roles[tensor] = LAST_STAGE_OUTPUTS[1]
            elif child.startswith("structural_stages."):
                roles[tensor] = LAST_STAGE_OUTPUTS[2]
            else:
                raise ValueError(f"{source}: the last stage reads {tensor} from {producer.name}, which is none of "
                                 "its inputs (a graph of another decoder configuration?)")
    found = sorted(roles.values(), key=LAST_STAGE_OUTPUTS.index)
    if found[:2] != list(LAST_STAGE_OUTPUTS[:2]):
        raise ValueError(f"{source}: no decoder last stage {last} found to cut before (found inputs {found})")

    # Name the cut points: an Identity per input of the last stage, then extract what they need.
    for tensor, name in roles.items():
        graph.node.append(helper.make_node("Identity", [tensor], [name], name=f"cut/{name}"))
    outputs = [*found, EMBEDDING_OUTPUT]
    embedding = next(output for output in graph.output if output.name == EMBEDDING_OUTPUT)
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in found)
    graph.output.append(embedding)
    extracted = onnx.utils.Extractor(model).extract_model([PIXELS_INPUT], outputs)
    onnx.save(extracted, str(destination))

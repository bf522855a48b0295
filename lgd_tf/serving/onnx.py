"""ONNX export of a classifier on one fixed-size clip (tf2onnx), run with onnxruntime.

Same function as the LiteRT export (`lgd_tf.serving.litert`): input "clip" `(1, T, H, W, C)`
uint8, output "probabilities" `(1, K)` float32, the Tensor Sketch FFT as MatMuls.
"""

import numpy as np

from lgd_tf.serving import litert

OPSET = 17


def convert_onnx(model, *, height=None, width=None, opset=OPSET):
    """The ONNX model (serialised bytes) of `model` on one clip, at `opset`."""
    import tf2onnx  # optional dependency: pip install lgd_tf[export]

    model = litert.edge_model(model)
    function = litert.probabilities_function(model, litert.input_shape(model, height, width))
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                             opset=int(opset))
    graph = proto.graph
    # tf2onnx names the tensors after the graph ("clip:0", "Identity:0"): plain names.
    renames = {graph.input[0].name: litert.INPUT_NAME, graph.output[0].name: litert.OUTPUT_NAME}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    graph.input[0].name = litert.INPUT_NAME
    graph.output[0].name = litert.OUTPUT_NAME
    return proto.SerializeToString()


class ONNXRunner:
    """Runs an ONNX classifier (bytes or path) with onnxruntime's CPU provider."""

    def __init__(self, model_content_or_path, num_threads=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        source = (bytes(model_content_or_path)
                  if isinstance(model_content_or_path, (bytes, bytearray))
                  else str(model_content_or_path))
        self.session = onnxruntime.InferenceSession(source, options,
                                                    providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.shape = tuple(int(d) for d in self.input.shape)
        self.output_size = int(self.session.get_outputs()[0].shape[-1])  # K

    def __call__(self, clip):
        return self.session.run(None, {self.input.name: np.asarray(clip, np.uint8)})[0]

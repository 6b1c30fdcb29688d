"""The portrait's face: detection and the 478-point mesh (ONNX), analysis, landmark sets, framing."""

"""A small TFLite -> ONNX converter for the three MediaPipe face models facetalk ships.

Why our own and not tf2onnx or tflite2onnx: tf2onnx's converter imports TensorFlow
(hundreds of MB, and protobuf releases that clash with mediapipe 0.10.21's <5 pin);
tflite2onnx (0.4.1, last released 2022) has no DENSIFY (the full-range detector's
sparse weights) nor DEPTH_TO_SPACE, and its Requires-Python metadata is rejected by
current pip; neither knows the three MediaPipe custom operators the attention mesh
model is built with (Landmarks2TransformMatrix, TransformTensorBilinear,
TransformLandmarks). All three candidates are Apache-2.0. These
models use a dozen operators, so a converter that handles exactly those, refuses
anything else, and writes the custom operators as plain ONNX (GridSample, MatMul...)
is shorter than patching either tool, runs offline with two small pure-Python
packages (``tflite`` to read the flatbuffer, ``onnx`` to write the graph), and
produces the same bytes on every run.

Layout: TFLite is NHWC, ONNX convolutions are NCHW. Every 4-D activation is kept in
NCHW inside the ONNX graph; the graph input stays NHWC (one Transpose at the start)
and 4-D graph outputs are transposed back, so callers see the TFLite shapes.

The custom operators follow MediaPipe's reference kernels (v2, the version these
models declare); their semantics are described where they are built below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import tflite
from flatbuffers import flexbuffers
from onnx import TensorProto, helper, numpy_helper
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.Padding import Padding
from tflite.TensorType import TensorType

OPSET = 17
_OP_NAMES = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
_NP_TYPES = {TensorType.FLOAT32: np.float32, TensorType.FLOAT16: np.float16,
             TensorType.INT32: np.int32, TensorType.INT64: np.int64, TensorType.UINT8: np.uint8,
             TensorType.INT8: np.int8}
#: NHWC axis -> NCHW axis.
_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: Any
    data: np.ndarray | None  # constant value, if any


class UnsupportedModel(ValueError):
    """The model uses an operator or option this converter does not handle."""


class Converter:
    """Converts one subgraph of a TFLite model; see the module docstring."""

    def __init__(self, path: str) -> None:
        self.buf = open(path, "rb").read()
        self.model = tflite.Model.GetRootAsModel(self.buf, 0)
        if self.model.SubgraphsLength() != 1:
            raise UnsupportedModel("only single-subgraph models are supported")
        self.g = self.model.Subgraphs(0)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.const: dict[int, np.ndarray] = {}  # folded constants by tensor index
        self.names: dict[int, str] = {}  # tensor index -> ONNX value name (NCHW if 4-D)
        self._uid = 0

    # ------------------------------------------------------------------ helpers
    def tensor(self, i: int) -> _Tensor:
        t = self.g.Tensors(i)
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        dtype = _NP_TYPES.get(t.Type())
        data = None
        b = self.model.Buffers(t.Buffer())
        if b is not None and b.DataLength() > 0:
            raw = b.DataAsNumpy().tobytes()
            if t.Sparsity() is not None:
                data = self._densify(t, raw, dtype, shape)
            else:
                data = np.frombuffer(raw, dtype=dtype).reshape(shape)
        return _Tensor(t.Name().decode(), shape, dtype, data)

    @staticmethod
    def _densify(t: Any, raw: bytes, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """Expand a TFLite sparse tensor: leading dense dimensions, last one CSR."""
        sp = t.Sparsity()
        order = list(sp.TraversalOrderAsNumpy())
        if order != list(range(len(shape))) or sp.BlockMapLength():
            raise UnsupportedModel("only row-major, unblocked sparsity is supported")
        dims = [sp.DimMetadata(d) for d in range(sp.DimMetadataLength())]
        if any(d.Format() != 0 for d in dims[:-1]) or dims[-1].Format() != 1:
            raise UnsupportedModel("only dense-then-CSR sparsity is supported")
        last = dims[-1]
        seg = _index_vector(last.ArraySegments(), last.ArraySegmentsType())
        idx = _index_vector(last.ArrayIndices(), last.ArrayIndicesType())
        values = np.frombuffer(raw, dtype=dtype)
        rows = int(np.prod(shape[:-1]))
        if len(seg) != rows + 1 or len(idx) != len(values):
            raise UnsupportedModel("inconsistent sparse tensor")
        dense = np.zeros((rows, shape[-1]), dtype=dtype)
        for r in range(rows):
            a, b = int(seg[r]), int(seg[r + 1])
            dense[r, idx[a:b]] = values[a:b]
        return dense.reshape(shape)

    def uid(self, stem: str) -> str:
        self._uid += 1
        return f"{stem}__{self._uid}"

    def add_const(self, value: np.ndarray, stem: str = "const") -> str:
        name = self.uid(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def add_weight(self, value: np.ndarray, stem: str) -> str:
        """A float weight: kept in its stored precision (float16) behind a Cast to float32."""
        if value.dtype == np.float16:
            half = self.add_const(value, stem + "_fp16")
            return self.node("Cast", [half], to=TensorProto.FLOAT)
        return self.add_const(value.astype(np.float32), stem)

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self.uid(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.uid("n_" + op), **attrs))
        return out

    def value(self, i: int) -> str:
        """ONNX name of TFLite tensor ``i`` (a constant becomes an initializer)."""
        if i in self.names:
            return self.names[i]
        if i in self.const:
            return self.add_weight(self.const[i], "c")
        raise UnsupportedModel(f"tensor {self.tensor(i).name} has no producer")

    def activation(self, x: str, fused: int) -> str:
        if fused == ActivationFunctionType.NONE:
            return x
        if fused == ActivationFunctionType.RELU:
            return self.node("Relu", [x])
        if fused == ActivationFunctionType.RELU6:
            return self.node("Clip", [x, self.add_const(np.float32(0)), self.add_const(np.float32(6))])
        raise UnsupportedModel(f"fused activation {fused}")

    @staticmethod
    def same_pads(in_hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int],
                  d: tuple[int, int] = (1, 1)) -> list[int]:
        """TensorFlow's SAME padding as ONNX pads [top, left, bottom, right]."""
        before, after = [], []
        for n, kk, ss, dd in zip(in_hw, k, s, d, strict=True):
            out = -(-n // ss)
            total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
            before.append(total // 2)
            after.append(total - total // 2)
        return before + after

    def to_nhwc(self, name: str) -> str:
        return self.node("Transpose", [name], perm=[0, 2, 3, 1])

    def to_nchw(self, name: str) -> str:
        return self.node("Transpose", [name], perm=[0, 3, 1, 2])

    # -------------------------------------------------------------- conversion
    def convert(self, graph_name: str) -> onnx.ModelProto:
        g = self.g
        inputs, outputs = [], []
        for k in range(g.InputsLength()):
            i = g.Inputs(k)
            t = self.tensor(i)
            inputs.append(helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape)))
            self.names[i] = self.to_nchw(t.name) if len(t.shape) == 4 else t.name
        for k in range(g.OperatorsLength()):
            self.op(g.Operators(k))
        for k in range(g.OutputsLength()):
            i = g.Outputs(k)
            t = self.tensor(i)
            src = self.names[i]
            self.node("Transpose" if len(t.shape) == 4 else "Identity", [src], out=t.name,
                      **({"perm": [0, 2, 3, 1]} if len(t.shape) == 4 else {}))
            outputs.append(helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape)))
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 producer_name="facetalk-tflite-to-onnx", producer_version="1")

    def op(self, op: Any) -> None:
        oc = self.model.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        ins = [op.Inputs(j) for j in range(op.InputsLength())]
        outs = [op.Outputs(j) for j in range(op.OutputsLength())]
        if code == BuiltinOperator.CUSTOM:
            name = oc.CustomCode().decode()
            raw = bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""
            opts = flexbuffers.Loads(raw) if len(raw) > 2 else {}
            handler = getattr(self, "custom_" + name, None)
            if handler is None:
                raise UnsupportedModel(f"custom operator {name}")
            handler(ins, outs, opts, oc.Version())
            return
        name = _OP_NAMES.get(code, str(code))
        handler = getattr(self, "op_" + name.lower(), None)
        if handler is None:
            raise UnsupportedModel(f"operator {name}")
        handler(op, ins, outs)

    # Constant-only operators are folded at export time.
    def op_dequantize(self, op: Any, ins: list[int], outs: list[int]) -> None:
        src = self.const.get(ins[0])
        if src is None:
            src = self.tensor(ins[0]).data
        if src is None or src.dtype != np.float16:
            raise UnsupportedModel("DEQUANTIZE of a non-constant or non-float16 tensor")
        self.const[outs[0]] = src  # stays float16; add_weight casts it in the graph

    def op_densify(self, op: Any, ins: list[int], outs: list[int]) -> None:
        data = self.tensor(ins[0]).data
        if data is None:
            raise UnsupportedModel("DENSIFY of a non-constant tensor")
        self.const[outs[0]] = data

    def _const_of(self, i: int) -> np.ndarray | None:
        if i in self.const:
            return self.const[i]
        return self.tensor(i).data

    def op_conv_2d(self, op: Any, ins: list[int], outs: list[int]) -> None:
        o = tflite.Conv2DOptions()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        w = self._const_of(ins[1])
        x_shape = self.tensor(ins[0]).shape
        k = (w.shape[1], w.shape[2])
        s, d = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
        pads = self.same_pads(x_shape[1:3], k, s, d) if o.Padding() == Padding.SAME else [0, 0, 0, 0]
        wi = self.add_weight(np.transpose(w, (0, 3, 1, 2)), "conv_w")
        args = [self.value(ins[0]), wi]
        if len(ins) > 2 and ins[2] >= 0:
            args.append(self.add_weight(self._const_of(ins[2]), "conv_b"))
        y = self.node("Conv", args, kernel_shape=list(k), strides=list(s), dilations=list(d), pads=pads)
        self.names[outs[0]] = self.activation(y, o.FusedActivationFunction())

    def op_depthwise_conv_2d(self, op: Any, ins: list[int], outs: list[int]) -> None:
        o = tflite.DepthwiseConv2DOptions()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        w = self._const_of(ins[1])  # (1, kh, kw, C * multiplier)
        x_shape = self.tensor(ins[0]).shape
        k = (w.shape[1], w.shape[2])
        s, d = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
        pads = self.same_pads(x_shape[1:3], k, s, d) if o.Padding() == Padding.SAME else [0, 0, 0, 0]
        wi = self.add_weight(np.transpose(w, (3, 0, 1, 2)), "dw_w")
        args = [self.value(ins[0]), wi]
        if len(ins) > 2 and ins[2] >= 0:
            args.append(self.add_weight(self._const_of(ins[2]), "dw_b"))
        y = self.node("Conv", args, kernel_shape=list(k), strides=list(s), dilations=list(d), pads=pads,
                      group=int(x_shape[3]))
        self.names[outs[0]] = self.activation(y, o.FusedActivationFunction())

    def _broadcast_operand(self, i: int, other_rank: int) -> str:
        """An operand of an elementwise op, constants re-laid out for NCHW activations."""
        c = self._const_of(i) if i not in self.names else None
        if c is None:
            return self.value(i)
        if other_rank == 4 and c.ndim >= 1 and c.size > 1:
            # NHWC-broadcastable constant (C,), (1,1,C), (1,1,1,C) -> (1,C,1,1).
            if c.shape[-1] != c.size:
                raise UnsupportedModel("elementwise constant with spatial extent")
            c = c.reshape(1, -1, 1, 1)
        return self.add_weight(c, "ew")

    def _elementwise(self, onnx_op: str, op: Any, ins: list[int], outs: list[int], opts_cls: Any) -> None:
        rank = max(len(self.tensor(i).shape) for i in ins)
        a = self._broadcast_operand(ins[0], rank)
        b = self._broadcast_operand(ins[1], rank)
        y = self.node(onnx_op, [a, b])
        fused = ActivationFunctionType.NONE
        if op.BuiltinOptions() is not None:
            o = opts_cls()
            o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            fused = o.FusedActivationFunction()
        self.names[outs[0]] = self.activation(y, fused)

    def op_add(self, op: Any, ins: list[int], outs: list[int]) -> None:
        self._elementwise("Add", op, ins, outs, tflite.AddOptions)

    def op_mul(self, op: Any, ins: list[int], outs: list[int]) -> None:
        self._elementwise("Mul", op, ins, outs, tflite.MulOptions)

    def op_relu(self, op: Any, ins: list[int], outs: list[int]) -> None:
        self.names[outs[0]] = self.node("Relu", [self.value(ins[0])])

    def op_prelu(self, op: Any, ins: list[int], outs: list[int]) -> None:
        alpha = self._const_of(ins[1])
        if alpha.shape[-1] != alpha.size:
            raise UnsupportedModel("PRELU alpha with spatial extent")
        a = self.add_weight(alpha.reshape(-1, 1, 1), "prelu")
        self.names[outs[0]] = self.node("PRelu", [self.value(ins[0]), a])

    def op_max_pool_2d(self, op: Any, ins: list[int], outs: list[int]) -> None:
        o = tflite.Pool2DOptions()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        x_shape = self.tensor(ins[0]).shape
        k, s = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        pads = self.same_pads(x_shape[1:3], k, s) if o.Padding() == Padding.SAME else [0, 0, 0, 0]
        y = self.node("MaxPool", [self.value(ins[0])], kernel_shape=list(k), strides=list(s), pads=pads)
        self.names[outs[0]] = self.activation(y, o.FusedActivationFunction())

    def op_pad(self, op: Any, ins: list[int], outs: list[int]) -> None:
        p = self._const_of(ins[1]).astype(np.int64)  # (rank, 2) in NHWC order
        if p.shape[0] != 4:
            raise UnsupportedModel("PAD of a non 4-D tensor")
        order = [0, 3, 1, 2]
        pads = [int(p[a, 0]) for a in order] + [int(p[a, 1]) for a in order]
        self.names[outs[0]] = self.node("Pad", [self.value(ins[0]), self.add_const(np.array(pads, np.int64))])

    def op_reshape(self, op: Any, ins: list[int], outs: list[int]) -> None:
        x = self.value(ins[0])
        if len(self.tensor(ins[0]).shape) == 4:
            x = self.to_nhwc(x)
        out_shape = self.tensor(outs[0]).shape
        y = self.node("Reshape", [x, self.add_const(np.array(out_shape, np.int64))])
        self.names[outs[0]] = self.to_nchw(y) if len(out_shape) == 4 else y

    def op_concatenation(self, op: Any, ins: list[int], outs: list[int]) -> None:
        o = tflite.ConcatenationOptions()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        rank = len(self.tensor(outs[0]).shape)
        axis = o.Axis() % rank
        if rank == 4:
            axis = _TO_NCHW_AXIS[axis]
        y = self.node("Concat", [self.value(i) for i in ins], axis=axis)
        self.names[outs[0]] = self.activation(y, o.FusedActivationFunction())

    def op_resize_bilinear(self, op: Any, ins: list[int], outs: list[int]) -> None:
        o = tflite.ResizeBilinearOptions()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        n, h, w, c = self.tensor(outs[0]).shape
        mode = ("align_corners" if o.AlignCorners()
                else "half_pixel" if o.HalfPixelCenters() else "asymmetric")
        sizes = self.add_const(np.array([n, c, h, w], np.int64))
        self.names[outs[0]] = self.node("Resize", [self.value(ins[0]), "", "", sizes], mode="linear",
                                        coordinate_transformation_mode=mode)

    def op_depth_to_space(self, op: Any, ins: list[int], outs: list[int]) -> None:
        o = tflite.DepthToSpaceOptions()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        # TensorFlow's NHWC depth-to-space reads channels as (block_y, block_x, C): DCR.
        self.names[outs[0]] = self.node("DepthToSpace", [self.value(ins[0])], blocksize=o.BlockSize(),
                                        mode="DCR")

    def op_strided_slice(self, op: Any, ins: list[int], outs: list[int]) -> None:
        shape = self.tensor(ins[0]).shape
        begin, end, strides = (self._const_of(i) for i in ins[1:4])
        if (list(begin) != [0] * len(shape) or list(strides) != [1] * len(shape)
                or self.tensor(outs[0]).shape != shape):
            raise UnsupportedModel("only whole-tensor STRIDED_SLICE is supported")
        del end
        self.names[outs[0]] = self.node("Identity", [self.value(ins[0])])

    # ----------------------------------------------------- MediaPipe custom ops
    def _scalar_cols(self, x: str, idx: int) -> str:
        """Column ``idx`` of a (..., K) tensor, keeping the last axis (..., 1)."""
        return self.node("Gather", [x, self.add_const(np.array([idx], np.int64))], axis=-1)

    def custom_Landmarks2TransformMatrix(self, ins: list[int], outs: list[int], opts: dict[str, Any],
                                         version: int) -> None:
        """Rotated box around a subset of landmarks, as a 4x4 crop matrix (v2 semantics).

        The box is aligned with the line from landmark ``left_rotation_idx`` to
        ``right_rotation_idx`` (rotated to ``target_rotation_radians``), spans the
        subset's extent in that frame times ``scale_x/scale_y``, and the matrix maps
        output pixel (u, v) of an ``output_width x output_height`` grid to input
        coordinates: shift(centre) . rotate(-r) . scale(size / output) . shift(-output / 2).
        """
        if version != 2:
            raise UnsupportedModel("Landmarks2TransformMatrix v1")
        lm = self.value(ins[0])  # (1, N, 3) in model pixels
        sub = np.array(opts["subset_idxs"], np.int64).reshape(-1)
        left, right = int(opts["left_rotation_idx"]), int(opts["right_rotation_idx"])
        target = float(opts.get("target_rotation_radians", 0.0))
        ow, oh = float(opts["output_width"]), float(opts["output_height"])
        sx, sy = float(opts["scale_x"]), float(opts["scale_y"])

        xy = self.node("Slice", [lm, self.add_const(np.array([0], np.int64)),
                                 self.add_const(np.array([2], np.int64)),
                                 self.add_const(np.array([2], np.int64))])  # (1, N, 2)
        pl = self.node("Gather", [xy, self.add_const(np.array([left], np.int64))], axis=1)
        pr = self.node("Gather", [xy, self.add_const(np.array([right], np.int64))], axis=1)
        dv = self.node("Sub", [pr, pl])  # (1, 1, 2)
        norm = self.node("Sqrt", [self.node("ReduceSum", [self.node("Mul", [dv, dv]),
                                                          self.add_const(np.array([-1], np.int64))],
                                            keepdims=1)])
        unit = self.node("Div", [dv, norm])  # (cos t, sin t) of the eye/mouth line
        ct, st = self._scalar_cols(unit, 0), self._scalar_cols(unit, 1)
        # r = target - t: cos r and sin r without atan2 (ONNX has none).
        c_tg, s_tg = np.float32(np.cos(target)), np.float32(np.sin(target))
        cos_r = self.node("Add", [self.node("Mul", [ct, self.add_const(c_tg)]),
                                  self.node("Mul", [st, self.add_const(s_tg)])])
        sin_r = self.node("Sub", [self.node("Mul", [ct, self.add_const(s_tg)]),
                                  self.node("Mul", [st, self.add_const(c_tg)])])
        pts = self.node("Gather", [xy, self.add_const(sub)], axis=1)  # (1, K, 2)
        px, py = self._scalar_cols(pts, 0), self._scalar_cols(pts, 1)
        rx = self.node("Sub", [self.node("Mul", [px, cos_r]), self.node("Mul", [py, sin_r])])
        ry = self.node("Add", [self.node("Mul", [px, sin_r]), self.node("Mul", [py, cos_r])])
        # Opset 17: ReduceMax/ReduceMin/ReduceProd take their axes as an attribute.
        x_max, x_min = (self.node(o, [rx], axes=[1], keepdims=1) for o in ("ReduceMax", "ReduceMin"))
        y_max, y_min = (self.node(o, [ry], axes=[1], keepdims=1) for o in ("ReduceMax", "ReduceMin"))
        half = self.add_const(np.float32(0.5))
        cxr = self.node("Mul", [self.node("Add", [x_min, x_max]), half])
        cyr = self.node("Mul", [self.node("Add", [y_min, y_max]), half])
        # Centre back in model coordinates: rotate by -r.
        cx = self.node("Add", [self.node("Mul", [cxr, cos_r]), self.node("Mul", [cyr, sin_r])])
        cy = self.node("Sub", [self.node("Mul", [cyr, cos_r]), self.node("Mul", [cxr, sin_r])])
        scx = self.node("Mul", [self.node("Sub", [x_max, x_min]), self.add_const(np.float32(sx / ow))])
        scy = self.node("Mul", [self.node("Sub", [y_max, y_min]), self.add_const(np.float32(sy / oh))])
        # rotate(-r) = [[cos r, sin r], [-sin r, cos r]]
        m00 = self.node("Mul", [cos_r, scx])
        m01 = self.node("Mul", [sin_r, scy])
        m10 = self.node("Neg", [self.node("Mul", [sin_r, scx])])
        m11 = self.node("Mul", [cos_r, scy])
        hx, hy = self.add_const(np.float32(-ow / 2)), self.add_const(np.float32(-oh / 2))
        tx = self.node("Add", [cx, self.node("Add", [self.node("Mul", [m00, hx]),
                                                     self.node("Mul", [m01, hy])])])
        ty = self.node("Add", [cy, self.node("Add", [self.node("Mul", [m10, hx]),
                                                     self.node("Mul", [m11, hy])])])
        zero = self.add_const(np.zeros((1, 1, 1), np.float32))
        one = self.add_const(np.ones((1, 1, 1), np.float32))
        row0 = self.node("Concat", [m00, m01, zero, tx], axis=-1)
        row1 = self.node("Concat", [m10, m11, zero, ty], axis=-1)
        row2 = self.node("Concat", [zero, zero, one, zero], axis=-1)
        row3 = self.node("Concat", [zero, zero, zero, one], axis=-1)
        self.names[outs[0]] = self.node("Concat", [row0, row1, row2, row3], axis=1)  # (1, 4, 4)

    def custom_TransformTensorBilinear(self, ins: list[int], outs: list[int], opts: dict[str, Any],
                                       version: int) -> None:
        """Resample a feature map through a crop matrix (v2: pixel centres at +0.5).

        Output pixel (u, v) reads input position M . (u + 0.5, v + 0.5) - 0.5 bilinearly;
        positions outside [0, size - 1] give 0. GridSample with align_corners=1 reads
        exactly that position; the explicit mask reproduces the hard cut-off.
        """
        if version != 2:
            raise UnsupportedModel("TransformTensorBilinear v1")
        _, h_in, w_in, _ = self.tensor(ins[0]).shape
        oh, ow = int(opts["output_height"]), int(opts["output_width"])
        feat, mat = self.value(ins[0]), self.value(ins[1])
        vv, uu = np.mgrid[0:oh, 0:ow].astype(np.float32)
        # Homogeneous pixel centres (u + 0.5, v + 0.5, 0, 1) as columns: (4, oh*ow).
        base = np.stack([uu.ravel() + 0.5, vv.ravel() + 0.5, np.zeros(oh * ow, np.float32),
                         np.ones(oh * ow, np.float32)])
        rows = self.node("Slice", [mat, self.add_const(np.array([0], np.int64)),
                                   self.add_const(np.array([2], np.int64)),
                                   self.add_const(np.array([1], np.int64))])  # (1, 2, 4)
        pos = self.node("Sub", [self.node("MatMul", [rows, self.add_const(base)]),
                                self.add_const(np.float32(0.5))])  # (1, 2, oh*ow) in pixels
        pos = self.node("Transpose", [pos], perm=[0, 2, 1])  # (1, oh*ow, 2): x, y
        size = np.array([w_in - 1, h_in - 1], np.float32)
        ge = self.node("Cast", [self.node("GreaterOrEqual", [pos, self.add_const(np.float32(0))])],
                       to=TensorProto.FLOAT)
        le = self.node("Cast", [self.node("LessOrEqual", [pos, self.add_const(size)])], to=TensorProto.FLOAT)
        inside = self.node("ReduceProd", [self.node("Mul", [ge, le])], axes=[-1], keepdims=0)  # (1, oh*ow)
        grid = self.node("Sub", [self.node("Mul", [pos, self.add_const(2.0 / size)]),
                                 self.add_const(np.float32(1.0))])
        grid = self.node("Reshape", [grid, self.add_const(np.array([1, oh, ow, 2], np.int64))])
        sampled = self.node("GridSample", [feat, grid], mode="bilinear", padding_mode="zeros",
                            align_corners=1)  # (1, C, oh, ow)
        mask = self.node("Reshape", [inside, self.add_const(np.array([1, 1, oh, ow], np.int64))])
        self.names[outs[0]] = self.node("Mul", [sampled, mask])

    def custom_TransformLandmarks(self, ins: list[int], outs: list[int], opts: dict[str, Any],
                                  version: int) -> None:
        """Map (1, N, 2|3) landmarks through a 4x4 matrix's 2-D affine part (v2); z passes."""
        if version != 2:
            raise UnsupportedModel("TransformLandmarks v1")
        lm, mat = self.value(ins[0]), self.value(ins[1])
        dims = self.tensor(ins[0]).shape[-1]
        lin = self.node("Slice", [mat, self.add_const(np.array([0, 0], np.int64)),
                                  self.add_const(np.array([2, 2], np.int64)),
                                  self.add_const(np.array([1, 2], np.int64))])  # (1, 2, 2)
        shift = self.node("Slice", [mat, self.add_const(np.array([0, 3], np.int64)),
                                    self.add_const(np.array([2, 4], np.int64)),
                                    self.add_const(np.array([1, 2], np.int64))])  # (1, 2, 1)
        xy = lm if dims == 2 else self.node("Slice", [lm, self.add_const(np.array([0], np.int64)),
                                                      self.add_const(np.array([2], np.int64)),
                                                      self.add_const(np.array([2], np.int64))])
        out = self.node("Add", [self.node("MatMul", [xy, self.node("Transpose", [lin], perm=[0, 2, 1])]),
                                self.node("Transpose", [shift], perm=[0, 2, 1])])
        if dims == 3:
            z = self.node("Slice", [lm, self.add_const(np.array([2], np.int64)),
                                    self.add_const(np.array([3], np.int64)),
                                    self.add_const(np.array([2], np.int64))])
            out = self.node("Concat", [out, z], axis=2)
        self.names[outs[0]] = out

    def custom_options(self) -> list[tuple[str, dict[str, Any]]]:
        """(custom op name, options) of every custom operator, in graph order."""
        found = []
        for k in range(self.g.OperatorsLength()):
            op = self.g.Operators(k)
            oc = self.model.OperatorCodes(op.OpcodeIndex())
            if max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) == BuiltinOperator.CUSTOM:
                raw = bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""
                found.append((oc.CustomCode().decode(), flexbuffers.Loads(raw) if len(raw) > 2 else {}))
        return found


def _index_vector(table: Any, kind: int) -> np.ndarray:
    """Values of a TFLite SparseIndexVector union (Int32Vector, Uint16Vector, Uint8Vector)."""
    from tflite.Int32Vector import Int32Vector
    from tflite.Uint8Vector import Uint8Vector
    from tflite.Uint16Vector import Uint16Vector

    cls = {1: Int32Vector, 2: Uint16Vector, 3: Uint8Vector}.get(kind)
    if cls is None or table is None:
        raise UnsupportedModel(f"sparse index vector type {kind}")
    v = cls()
    v.Init(table.Bytes, table.Pos)
    return np.asarray(v.ValuesAsNumpy()).astype(np.int64)


def convert(path: str, graph_name: str) -> tuple[onnx.ModelProto, Converter]:
    """Convert ``path``; returns the model and the converter (to add nodes or read options)."""
    conv = Converter(path)
    return conv.convert(graph_name), conv

"""ONNX -> official state dict for U2-Net, U2-NetP, IS-Net and the IS-Net GT encoder.

Works for graphs exported here, official/rembg exports (``u2net.onnx``, ``isnet-general-use.onnx``)
and graphs whose BatchNorms were folded into the convolutions, whatever the tensor names.
Weights are matched by **graph structure**, not by name:

* Side heads (and U2-Net's fusion ``outconv``) are the convolutions with one output channel; all
  other convolutions form a single dependency chain (every RSU conv consumes the previous one's
  result), so their order in any valid (topologically sorted) ONNX graph is the forward order
  of the PyTorch model, checked shape by shape and attribute by attribute.
* Each head is identified by the stage that feeds it: walking back from its input (through
  data inputs only, never through ``Shape`` sub-graphs) to the nearest convolutions, the latest
  chain conv reached is the last conv of that stage (``sideK`` <- ``stageKd``/``stage6``); a
  head fed by other heads is the fusion conv.
* A conv followed by ``BatchNormalization`` gives the conv and BN tensors as stored (a BN epsilon
  different from 1e-5 is absorbed into ``running_var``).  A conv whose BN was folded keeps the
  folded weights and the BN becomes the identity: weight 1, bias 0, running mean 0 and running
  variance ``v`` chosen so that ``float32(v + eps) == 1`` exactly; PyTorch's float32 BatchNorm
  then returns its input bit for bit, so the model reproduces the graph's arithmetic.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from salseg.models.errors import WeightsError
from salseg.models.registry import canonical_name, create_model, model_names

_DATA_INPUT_ONLY = {"Resize", "Upsample", "Reshape", "Expand", "Slice", "Pad", "Tile"}
_SHAPE_OPS = {"Shape", "Size", "ConstantOfShape"}


def identity_var(eps: float) -> float:
    """A float32 running variance ``v`` with ``float32(v + eps) == 1`` (so BN is the identity)."""
    v = np.float32(1.0 - eps)
    e = np.float32(eps)
    for _ in range(64):
        total = np.float32(v + e)
        if total == np.float32(1.0) and np.float64(v) + np.float64(e) <= 1.0 + 1e-7:
            return float(v)
        v = np.nextafter(v, np.float32(0) if total > 1 else np.float32(2), dtype=np.float32)
    raise ValueError(f"no float32 variance makes BatchNorm(eps={eps}) the identity")


# -- the PyTorch side: forward order of convolutions, BN pairing, what feeds each head --------
@dataclass(frozen=True)
class _RefConv:
    name: str  # module name of the conv, e.g. "stage1.rebnconvin.conv_s1"
    bn: str | None  # module name of the BatchNorm that follows, if any
    shape: tuple[int, ...]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    source: str | None = None  # heads: chain conv at the end of the feeding stage; None = fusion


@dataclass(frozen=True)
class _Reference:
    chain: tuple[_RefConv, ...]
    heads: tuple[_RefConv, ...]
    keys: tuple[str, ...]
    eps: float


@functools.cache
def _reference(name: str, out_ch: int = 1) -> _Reference:
    with torch.device("meta"):
        model = create_model(name, **({"out_ch": out_ch} if out_ch != 1 else {})).eval()
    produced_by: dict[int, list[str]] = {}
    consumed: dict[str, int] = {}
    order: list[str] = []
    keep: list[torch.Tensor] = []

    def hook(module_name: str):
        def fn(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                keep.append(output)
                produced_by.setdefault(id(output), []).append(module_name)
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                keep.append(inputs[0])
                consumed[module_name] = id(inputs[0])
                if isinstance(module, nn.Conv2d):
                    order.append(module_name)
        return fn

    modules = dict(model.named_modules())
    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items() if n]
    in_ch = getattr(model, "in_ch", 3)
    with torch.no_grad():
        model(torch.empty(1, in_ch, 64, 64, device="meta"))
    for h in handles:
        h.remove()
    # BatchNorm that directly consumes a conv's output
    bn_of: dict[str, str] = {}
    conv_out = {}
    for conv in order:
        for tid, names in produced_by.items():
            if conv in names:
                conv_out[conv] = tid
    for bn_name, tid in consumed.items():
        if isinstance(modules[bn_name], nn.BatchNorm2d):
            for conv, out_id in conv_out.items():
                if out_id == tid:
                    bn_of[conv] = bn_name
    out_ch = getattr(model, "out_ch", 1)
    chain, heads = [], []
    chain_names = [c for c in order if modules[c].out_channels != out_ch]
    for conv in order:
        m = modules[conv]
        ref = dict(name=conv, bn=bn_of.get(conv), shape=tuple(m.weight.shape),
                   stride=tuple(m.stride), dilation=tuple(m.dilation))
        if m.out_channels != out_ch:
            chain.append(_RefConv(**ref))
            continue
        feeders = produced_by.get(consumed[conv], [])
        stage = min(feeders, key=len) if feeders else None
        source = None
        if stage is not None:
            inside = [c for c in chain_names if c.startswith(stage + ".") or c == stage]
            source = inside[-1] if inside else None
        heads.append(_RefConv(**ref, source=source))
    eps = next((m.eps for m in modules.values() if isinstance(m, nn.BatchNorm2d)), 1e-5)
    return _Reference(tuple(chain), tuple(heads), tuple(model.state_dict().keys()), eps)


# -- the ONNX side ----------------------------------------------------------------------------
@dataclass
class _OnnxConv:
    node: object
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]
    dilation: tuple[int, int]
    bn: dict | None = None
    follower: str | None = None  # op type of the single consumer


def _attr(node, name: str, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def load_onnx(path: str | Path, load_external_data: bool = True):  # noqa: ANN201
    """``onnx.load`` with one clear :class:`WeightsError` naming the file for a missing, empty
    (0 bytes; protobuf parses it as an empty model), corrupt or graph-less file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: ONNX file not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: ONNX file is empty (0 bytes): an interrupted download or "
                           "copy? fetch or export it again")
    try:
        proto = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, external data errors ...
        raise WeightsError(f"{path}: not a readable ONNX file (corrupt or not ONNX: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                           ) from None
    if not proto.graph.node:
        raise WeightsError(f"{path}: not a readable ONNX file (no graph in it: corrupt or not "
                           "ONNX)")
    return proto


class _Graph:
    def __init__(self, path: Path) -> None:
        from onnx import numpy_helper

        proto = load_onnx(path)
        self.path = path
        graph = proto.graph
        self.nodes = list(graph.node)
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.producer: dict[str, object] = {}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)
            if node.op_type == "Constant" and node.output:
                value = _attr(node, "value", None)
                if value is not None:
                    self.consts[node.output[0]] = numpy_helper.to_array(value)
        # constant-only Identity / Cast chains (e.g. float16 weights cast to float32)
        changed = True
        while changed:
            changed = False
            for node in self.nodes:
                if (node.op_type in ("Identity", "Cast") and node.input
                        and node.input[0] in self.consts and node.output[0] not in self.consts):
                    self.consts[node.output[0]] = self.consts[node.input[0]]
                    changed = True

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise WeightsError(f"{self.path}: {what} {name!r} is not a constant of the graph")
        return np.asarray(self.consts[name], dtype=np.float32)

    def convs(self) -> list[_OnnxConv]:
        out = []
        for node in self.nodes:
            if node.op_type != "Conv":
                continue
            if int(_attr(node, "group", 1)) != 1:
                raise WeightsError(f"{self.path}: grouped convolution {node.name!r} is not part "
                                   "of U2-Net / IS-Net")
            weight = self.const(node.input[1], "conv weight")
            bias = self.const(node.input[2], "conv bias") if len(node.input) > 2 and node.input[2] \
                else None
            conv = _OnnxConv(node, weight, bias, tuple(_attr(node, "strides", [1, 1])),
                             tuple(_attr(node, "dilations", [1, 1])))
            users = self.consumers.get(node.output[0], [])
            if len(users) == 1:
                conv.follower = users[0].op_type
                if users[0].op_type == "BatchNormalization":
                    bn = users[0]
                    conv.bn = {
                        "weight": self.const(bn.input[1], "BN scale"),
                        "bias": self.const(bn.input[2], "BN bias"),
                        "running_mean": self.const(bn.input[3], "BN mean"),
                        "running_var": self.const(bn.input[4], "BN variance"),
                        "eps": float(_attr(bn, "epsilon", 1e-5)),
                    }
            out.append(conv)
        return out

    def frontier(self, tensor: str) -> set[str]:
        """Names of the nearest Conv nodes upstream of ``tensor`` (data paths only)."""
        found: set[str] = set()
        seen: set[str] = set()
        stack = [tensor]
        while stack:
            t = stack.pop()
            if t in seen or t not in self.producer:
                continue
            seen.add(t)
            node = self.producer[t]
            if node.op_type == "Conv":
                found.add(node.output[0])
                continue
            if node.op_type in _SHAPE_OPS:
                continue
            inputs = node.input[:1] if node.op_type in _DATA_INPUT_ONLY else node.input
            stack.extend(i for i in inputs if i and i not in self.consts)
        return found


def _match(ref: _Reference, chain: list[_OnnxConv]) -> str | None:
    """Why ``chain`` does not fit ``ref`` (``None`` when it fits)."""
    if len(chain) != len(ref.chain):
        return f"{len(chain)} body convolutions, expected {len(ref.chain)}"
    for i, (c, r) in enumerate(zip(chain, ref.chain)):
        if tuple(c.weight.shape) != r.shape:
            return f"conv #{i} ({r.name}) has shape {tuple(c.weight.shape)}, expected {r.shape}"
        if c.stride != r.stride or c.dilation != r.dilation:
            return (f"conv #{i} ({r.name}) has stride {c.stride} dilation {c.dilation}, expected "
                    f"{r.stride} {r.dilation}")
    return None


def onnx_to_state_dict(path: str | Path, name: str | None = None
                       ) -> OrderedDict[str, torch.Tensor]:
    """Read an ONNX U2-Net / U2-NetP / IS-Net (/ GT encoder) into a state dict with official keys.

    ``name`` fixes the architecture; by default it is recognised from the graph.
    Raises :class:`~salseg.models.weights.WeightsError` for graphs that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: ONNX file not found")
    graph = _Graph(path)
    convs = graph.convs()
    if not convs:
        raise WeightsError(f"{path}: the graph holds no convolutions")
    head_channels = min(int(c.weight.shape[0]) for c in convs)
    chain = [c for c in convs if c.weight.shape[0] != head_channels]
    heads = [c for c in convs if c.weight.shape[0] == head_channels]
    candidates = [canonical_name(name)] if name else model_names()
    reasons = {}
    chosen = None
    out_ch = int(head_channels)  # multi-channel heads, e.g. a 4-class U2-Net (cloth parsing)
    for cand in candidates:
        ref = _reference(cand, out_ch)
        why = _match(ref, chain)
        if why is None and len(heads) == len(ref.heads):
            chosen = cand
            break
        reasons[cand] = why or f"{len(heads)} head convolutions, expected {len(ref.heads)}"
    if chosen is None:
        detail = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        raise WeightsError(f"{path}: graph does not match "
                           f"{'model ' + name if name else 'any known architecture'} ({detail})")
    ref = _reference(chosen, out_ch)

    # identify the heads by the stage that feeds them
    chain_index = {c.node.output[0]: i for i, c in enumerate(chain)}
    head_outputs = {c.node.output[0] for c in heads}
    by_source = {r.source: r for r in ref.heads}
    assigned: dict[str, _OnnxConv] = {}
    for conv in heads:
        front = graph.frontier(conv.node.input[0])
        if front & head_outputs:
            key = None  # fusion conv
        else:
            idx = [chain_index[t] for t in front if t in chain_index]
            if not idx:
                raise WeightsError(f"{path}: cannot tell which stage feeds head conv "
                                   f"{conv.node.name!r}")
            key = ref.chain[max(idx)].name
        r = by_source.get(key)
        if r is None or r.name in assigned:
            raise WeightsError(f"{path}: head conv {conv.node.name!r} does not fit {chosen}")
        if tuple(conv.weight.shape) != r.shape:
            raise WeightsError(f"{path}: {r.name} has shape {tuple(conv.weight.shape)}, "
                               f"expected {r.shape}")
        assigned[r.name] = conv

    tensors: dict[str, torch.Tensor] = {}
    ident = identity_var(ref.eps)

    def put(key: str, value: np.ndarray) -> None:
        tensors[key] = torch.from_numpy(np.array(value, dtype=np.float32, copy=True))

    for conv, r in [*zip(chain, ref.chain), *[(assigned[h.name], h) for h in ref.heads]]:
        put(f"{r.name}.weight", conv.weight)
        put(f"{r.name}.bias", conv.bias if conv.bias is not None
            else np.zeros(conv.weight.shape[0], np.float32))
        if r.bn is None:
            if conv.bn is not None:
                raise WeightsError(f"{path}: {r.name} is followed by a BatchNormalization in the "
                                   f"graph but has none in {chosen}")
            continue
        n = conv.weight.shape[0]
        if conv.bn is not None:
            bn = conv.bn
            var = bn["running_var"].astype(np.float64) + bn["eps"] - ref.eps
            for k in ("weight", "bias", "running_mean"):
                put(f"{r.bn}.{k}", bn[k])
            put(f"{r.bn}.running_var", var)
        else:
            if conv.follower not in ("Relu", None):
                raise WeightsError(f"{path}: {r.name} is followed by {conv.follower}, expected "
                                   "BatchNormalization or (folded) Relu")
            put(f"{r.bn}.weight", np.ones(n))
            put(f"{r.bn}.bias", np.zeros(n))
            put(f"{r.bn}.running_mean", np.zeros(n))
            put(f"{r.bn}.running_var", np.full(n, ident))
        tensors[f"{r.bn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in ref.keys if k not in tensors]
    if missing:
        raise WeightsError(f"{path}: could not recover {len(missing)} tensors (e.g. {missing[:3]})")
    return OrderedDict((k, tensors[k]) for k in ref.keys)

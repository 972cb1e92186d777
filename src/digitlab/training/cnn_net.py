"""The CNN's network: an architecture string -> a torch module, and its export to one ONNX graph.

The exported graph takes `input` float32 `(n, 784)` in [0, 1] and returns `probabilities` float32
`(n, 10)` = softmax(logits / temperature); torch is imported inside functions only.
"""

from __future__ import annotations

import os
import re
import sys

OPSET = 17


INPUT_NAME = "input"


OUTPUT_NAME = "probabilities"
#: with several members: each member's own probabilities (n, members, 10), the served network's parts
#: (each member's features through its share of the linear layer, the shared bias): the "not sure"
#: flag's second opinion for the CNN (their disagreement marks real mistakes)
MEMBERS_NAME = "member_probabilities"


#: the network, left to right: `c<N>` a conv-BN-ReLU block with N channels (3x3; `c<N>k5` 5x5), `p` a
#: 2x2 max-pool; then global average pooling, dropout and a linear layer to the 10 classes
ARCH = "c32,p,c64,c64,p,c128"


def has_torch() -> bool:
    """Is PyTorch installed (the `cnn` extra)? Asked before any work that needs it, without importing it."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def import_torch():
    """Import torch, first asking OpenMP to sleep (not spin) while its threads wait for each other.

    Only effective when torch is not imported yet (libgomp reads it at load). On a shared CPU spinning
    threads waste most of their time: measured here at load ~10, 2 threads spent 1.0 CPU-s per batch
    with the default policy and 0.23 with PASSIVE (the same as 1 thread).
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    return torch


def bf16_is_fast() -> bool:
    """True where the CPU computes bfloat16 natively: AMX tiles (a training step of this network in ~0.55x
    the float32 time, Intel Xeon) or AVX512-BF16 (~0.64x, AMD EPYC, session 14); elsewhere bfloat16 is
    emulated and slower."""
    torch = import_torch()
    try:
        if torch.cpu._is_amx_tile_supported():
            return True
    except AttributeError:  # an older torch without the probe
        pass
    return "avx512_bf16" in _cpu_flags()


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux `/proc/cpuinfo`; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def _parse_arch(arch: str) -> list[tuple[str, int, int]]:
    """'c32,p,c64k5' -> [('conv', 32, 3), ('pool', 0, 0), ('conv', 64, 5)]."""
    layers = []
    for token in arch.replace(" ", "").split(","):
        if token == "p":
            layers.append(("pool", 0, 0))
            continue
        match = re.fullmatch(r"c(\d+)(?:k(\d+))?", token)
        if match is None:
            raise ValueError(f"bad layer {token!r} in arch {arch!r}: use c<channels>[k<kernel>] or p")
        layers.append(("conv", int(match[1]), int(match[2] or 3)))
    if not any(kind == "conv" for kind, _, _ in layers):
        raise ValueError(f"arch {arch!r} has no convolution")
    return layers


def build_network(arch: str = ARCH, members: int = 1):
    """The layers of `arch` (see ARCH), then global average pooling, dropout 0.1 and FC(10).

    Input `(n, 1, 28, 28)`, output logits `(n, 10)`. With `members` > 1 the network holds that many copies
    of `arch` side by side (grouped convolutions, one group per member) and one linear layer over all
    their features: the shape `merge_members` fills with independently trained networks.
    """
    from torch import nn

    layers, cin = [], 1
    for kind, channels, kernel in _parse_arch(arch):
        if kind == "pool":
            layers.append(nn.MaxPool2d(2))
            continue
        groups = 1 if cin == 1 else members  # the one input channel is shared by every member
        layers += [
            nn.Conv2d(cin, channels * members, kernel, padding=kernel // 2, bias=False, groups=groups),
            nn.BatchNorm2d(channels * members),
            nn.ReLU(inplace=True),
        ]
        cin = channels * members
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(cin, 10))


def merge_members(nets: list, arch: str = ARCH):
    """One network whose logits are the mean of the members' logits (all built with `arch`, eval mode).

    Each member becomes one group of every convolution, its batch-norm channels are kept as they are, and
    the mean of the members' linear layers is one linear layer over the concatenated features. So an
    ensemble is served (and fine-tuned) as a single chain of ordinary layers.
    """
    import torch
    from torch import nn

    merged = build_network(arch, members=len(nets)).eval()
    with torch.no_grad():
        for index, layer in enumerate(merged):
            parts = [net[index] for net in nets]
            if isinstance(layer, nn.Conv2d):
                layer.weight.copy_(torch.cat([p.weight for p in parts]))
            elif isinstance(layer, nn.BatchNorm2d):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(layer, name).copy_(torch.cat([getattr(p, name) for p in parts]))
            elif isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.cat([p.weight for p in parts], dim=1) / len(nets))
                layer.bias.copy_(torch.stack([p.bias for p in parts]).mean(0))
    return merged


def architecture_summary(arch: str = ARCH, members: int = 1) -> str:
    parts = [
        "maxpool2" if kind == "pool" else f"conv{kernel}x{kernel}({channels})-BN-ReLU"
        for kind, channels, kernel in _parse_arch(arch)
    ]
    summary = ", ".join([*parts, "global-avg-pool", "dropout 0.1", "FC(10)"])
    return summary if members == 1 else f"{members} x ({summary}), mean of the logits"


def members_of(net) -> int:
    """How many networks a chain holds: the groups of its last convolution (1: a single network)."""
    from torch import nn

    convs = [layer for layer in net if isinstance(layer, nn.Conv2d)]
    return int(convs[-1].groups) if convs else 1


def _inference_module(net, temperature: float):
    """(n, 784) in [0, 1] -> softmax(logits / T) (and with several members each member's own, from its
    features and its share of the linear layer): the exact graph that is exported to ONNX."""
    import torch
    from torch import nn

    members = members_of(net)

    class Served(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("inv_temperature", torch.tensor(1.0 / temperature, dtype=torch.float32))

        def forward(self, x):
            features = self.net[:-1](x.reshape(-1, 1, 28, 28))
            linear = self.net[-1]
            probabilities = torch.softmax(linear(features) * self.inv_temperature, dim=1)
            if members == 1:
                return probabilities
            width = features.shape[1] // members  # member k's features are the k-th block (merge_members)
            own = [
                nn.functional.linear(features[:, k * width : (k + 1) * width],
                                     linear.weight[:, k * width : (k + 1) * width] * members, linear.bias)
                for k in range(members)
            ]  # fmt: skip
            return probabilities, torch.softmax(torch.stack(own, dim=1) * self.inv_temperature, dim=2)

    return Served().eval()


def export_onnx(net, temperature: float) -> bytes:
    """The trained network (eval mode: BN folded by the exporter) as ONNX bytes, checked by onnx."""
    import io
    import warnings

    import onnx
    import torch

    module = _inference_module(net, temperature)
    outputs = [OUTPUT_NAME] if members_of(net) == 1 else [OUTPUT_NAME, MEMBERS_NAME]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy (TorchScript) exporter warns that it is legacy
        torch.onnx.export(
            module,
            (torch.zeros(1, 784),),
            buf,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={name: {0: "n"} for name in (INPUT_NAME, *outputs)},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    model.doc_string = f"digitlab cnn: softmax(logits / {temperature:.4f})"
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()

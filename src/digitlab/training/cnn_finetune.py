"""Fine-tuning a served CNN on labelled user drawings (`digitlab learn`), starting from its ONNX artefact.

The served graph is a chain (Conv with batch norm folded in, Relu, MaxPool, GlobalAveragePool, Flatten,
Gemm, then `* 1/T` and Softmax), so it is rebuilt as a torch `Sequential` with the same weights, trained
for a short while on user drawings mixed with MNIST, and exported again with the same temperature.
torch is imported inside functions only.
"""

from __future__ import annotations

import numpy as np

from digitlab.training.cnn_augment import Augmentation, augment_batch
from digitlab.training.cnn_net import OUTPUT_NAME, bf16_is_fast, export_onnx, import_torch
from digitlab.training.progress import log

EPOCHS = 2
BATCH = 128
LEARNING_RATE = 1e-4
LABEL_SMOOTHING = 0.05  #: as in training: without it the logits sharpen and the served temperature no longer fits
#: the candidates' weights are these mixes of the fine-tuned and the served ones (weight-space ensembling,
#: "WiSE-FT"): at 0.5 the users' styles are learned and little of what the served network knew is
#: forgotten; at 1.0 (the fine-tuned network itself) styles far from the served network's are learned fully
FINETUNED_SHARES = (0.5, 1.0)
#: mild augmentation: the user drawings are already canvas drawings through the app's preprocessing
FINETUNE_AUGMENTATION = Augmentation(rotation_deg=8.0, scale=(0.9, 1.1), translate_px=1.5, elastic_p=0.2)


def network_from_onnx(payload: bytes):
    """(torch Sequential producing logits from (n, 1, 28, 28), temperature) from a served CNN's bytes."""
    import onnx
    from onnx import numpy_helper

    torch = import_torch()
    from torch import nn

    model = onnx.load_from_string(payload)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers: list = []
    temperature = 1.0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            w, b = weights[node.input[1]], weights[node.input[2]]
            groups = attrs.get("group", 1)  # an ensemble of several networks is one grouped chain
            conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(attrs["strides"]),
                             padding=tuple(attrs["pads"][:2]), groups=groups)  # fmt: skip
            conv.weight.data = torch.from_numpy(w.copy())
            conv.bias.data = torch.from_numpy(b.copy())
            layers.append(conv)
        elif node.op_type == "Relu":
            layers.append(nn.ReLU())
        elif node.op_type == "MaxPool":
            layers.append(nn.MaxPool2d(tuple(attrs["kernel_shape"]), tuple(attrs["strides"])))
        elif node.op_type == "GlobalAveragePool":
            layers.append(nn.AdaptiveAvgPool2d(1))
        elif node.op_type == "Flatten":
            layers.append(nn.Flatten())
        elif node.op_type == "Gemm":
            w, b = weights[node.input[1]], weights[node.input[2]]
            linear = nn.Linear(w.shape[1], w.shape[0])
            linear.weight.data = torch.from_numpy(w.copy())
            linear.bias.data = torch.from_numpy(b.copy())
            layers.append(linear)
        elif node.op_type == "Mul":
            temperature = 1.0 / float(weights[node.input[1]])
        elif node.op_type == "Identity":  # eval-mode dropout, or one initializer shared by equal tensors
            if node.input[0] in weights:
                weights[node.output[0]] = weights[node.input[0]]
        elif node.op_type == "Softmax" and OUTPUT_NAME in node.output:
            break  # the served probabilities; what follows is the members' own (rebuilt by export_onnx)
        elif node.op_type not in ("Constant", "Reshape", "Softmax"):
            raise ValueError(f"the CNN's graph has a {node.op_type} node this fine-tuner does not know")
    return nn.Sequential(*layers), temperature


def finetune(
    payload: bytes,
    user: tuple[np.ndarray, np.ndarray],
    base: tuple[np.ndarray, np.ndarray],
    *,
    weight: int,
    seed: int = 0,
    shares: tuple[float, ...] = FINETUNED_SHARES,
) -> dict[float, bytes]:
    """The served CNN fine-tuned once on user drawings (each seen `weight` times per epoch) mixed with
    digits of its own training data (`base`: uint8 (n, 28, 28) arrays); returns {share: ONNX bytes} of
    the weights `share` * fine-tuned + (1 - share) * served, one candidate per share."""
    torch = import_torch()
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net, temperature = network_from_onnx(payload)
    served = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
    x = np.concatenate([np.repeat(user[0].reshape(-1, 28, 28), weight, axis=0), base[0].reshape(-1, 28, 28)])
    y = np.concatenate([np.repeat(user[1], weight), base[1]]).astype(np.int64)
    x_all, y_all = torch.from_numpy(np.ascontiguousarray(x, np.uint8)), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    batches = max(1, len(x_all) // BATCH)
    bf16 = bf16_is_fast()  # as in training: the forward pass in bfloat16 where the CPU has it natively
    log(f"cnn: fine-tuning {EPOCHS} epochs on {len(x_all):,} images; epoch 1/{EPOCHS} running")
    for epoch in range(1, EPOCHS + 1):
        net.train()
        order = torch.randperm(len(x_all), generator=generator)
        total = 0.0
        for step in range(batches):
            idx = order[step * BATCH : (step + 1) * BATCH]
            batch = x_all[idx].float().div_(255.0).unsqueeze(1)
            with torch.no_grad():
                batch = augment_batch(batch, generator, FINETUNE_AUGMENTATION)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(batch)
            loss = F.cross_entropy(logits.float(), y_all[idx], label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        # "done", and which epoch runs now: the line stays the job's message (with "so far") during the next
        # epoch, and "epoch 1/2 ... (34 s so far)" read as if the first were still running (a tour, session 50)
        following = f"; epoch {epoch + 1}/{EPOCHS} running" if epoch < EPOCHS else ""
        log(f"cnn: fine-tuning epoch {epoch}/{EPOCHS} done on {len(x_all):,} images, loss {total / batches:.4f}"
            f"{following}")  # fmt: skip
    net.eval()
    tuned = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
    candidates = {}
    with torch.no_grad():
        for share in shares:
            net.load_state_dict({name: torch.lerp(served[name], tuned[name], share) for name in tuned})
            candidates[share] = export_onnx(net, temperature)
    return candidates

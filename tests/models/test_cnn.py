"""The CNN: the committed ONNX artefact (onnxruntime only, no torch) and a tiny training run (torch only).

Serving must work without torch, so everything except `test_tiny_training_*` / `test_train_network_*`
runs on onnxruntime and numpy alone; the training tests skip themselves when torch is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import log_softmax

from digitlab.models.onnx import make_session
from digitlab.models.registry import BUNDLED_DIR
from digitlab.training import calibration, cnn, cnn_augment, cnn_net

# Before torch is first imported: OpenMP threads sleep instead of spinning while they wait, which keeps
# the training tests fast on a busy (CI / shared) CPU. Same as `cnn_net.import_torch` does for training.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BUNDLED = BUNDLED_DIR
MANIFEST_KEYS = {
    "name", "display_name", "version", "artifact", "format", "sha256", "size_bytes", "trained_at",
    "training_seconds", "train_samples", "library_versions", "metrics", "confusion_matrix", "params",
}  # fmt: skip


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((BUNDLED / "cnn.json").read_text())


@pytest.fixture(scope="module")
def session():
    return make_session((BUNDLED / "cnn.onnx").read_bytes())


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    from digitlab.data import load_mnist

    return load_mnist("test", directory=mnist_dir, download=False, limit=2000)


# --- the committed artefact (onnxruntime only) -----------------------------------------------------


def test_bundled_manifest_matches_artifact(manifest):
    payload = (BUNDLED / manifest["artifact"]).read_bytes()
    assert MANIFEST_KEYS <= manifest.keys()
    assert manifest["name"] == "cnn" and manifest["artifact"] == "cnn.onnx" and manifest["format"] == "onnx"
    assert manifest["display_name"] == "CNN (convolutional network)"
    assert hashlib.sha256(payload).hexdigest() == manifest["sha256"]
    assert len(payload) == manifest["size_bytes"] <= 5_000_000
    # a guard against shipping a broken build; the issue bar (99.6 %) is tracked in README and the notes
    assert manifest["metrics"]["mnist_test_accuracy"] >= 0.995
    cm = np.asarray(manifest["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 10_000
    assert np.trace(cm) / cm.sum() == pytest.approx(manifest["metrics"]["mnist_test_accuracy"], abs=1e-5)
    assert manifest["params"]["temperature"] > 0
    assert {"epochs", "seed", "architecture"} <= manifest["params"].keys()
    assert {"torch", "onnx", "onnxruntime", "numpy", "python"} <= manifest["library_versions"].keys()


def test_bundled_onnx_contract(session, test_images, manifest):
    (inp,), (out, own) = session.get_inputs(), session.get_outputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert len(inp.shape) == 2 and inp.shape[1] == 784 and not isinstance(inp.shape[0], int)  # dynamic batch
    assert out.name == "probabilities" and out.type == "tensor(float)" and out.shape[1] == 10
    # each of its networks' own probabilities: their logits average to the served ones
    members = manifest["params"]["members"]
    assert members >= 2 and own.name == "member_probabilities" and own.shape[1:] == [members, 10]
    x = test_images[0][:200].reshape(200, 784).astype(np.float32) / 255.0
    proba, members = session.run(["probabilities", "member_probabilities"], {"input": x})
    mean_log = np.log(members.astype(np.float64)).mean(axis=1)
    np.testing.assert_allclose(np.exp(log_softmax(mean_log, axis=1)), proba, atol=1e-5)
    assert (members.argmax(axis=2) == proba.argmax(axis=1)[:, None]).mean() > 0.98


def test_bundled_accuracy_on_first_2000_test_images(session, test_images):
    images, labels = test_images
    proba = session.run(["probabilities"], {"input": images.reshape(-1, 784).astype(np.float32) / 255})[0]
    assert proba.shape == (2000, 10) and proba.dtype == np.float32
    assert (proba.argmax(axis=1) == labels).mean() >= 0.99
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert proba.min() >= 0.0


def test_bundled_single_sample_matches_batch(session, test_images):
    images, _ = test_images
    x = images[:16].reshape(16, 784).astype(np.float32) / 255.0
    batch = session.run(["probabilities"], {"input": x})[0]
    singles = np.concatenate([session.run(["probabilities"], {"input": x[i : i + 1]})[0] for i in range(16)])
    np.testing.assert_allclose(singles, batch, atol=1e-5)


def test_bundled_blank_and_extreme_inputs_do_not_crash(session):
    for x in (np.zeros((1, 784), np.float32), np.ones((2, 784), np.float32), np.zeros((0, 784), np.float32)):
        proba = session.run(["probabilities"], {"input": x})[0]
        assert proba.shape == (len(x), 10)
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_bundled_model_loads_through_the_registry(tmp_path, test_images):
    from digitlab.models import load_model

    model = load_model("cnn", tmp_path)  # empty model dir: falls back to the bundled artefact
    assert model.manifest["format"] == "onnx"
    images, labels = test_images
    proba = model.predict_proba(images[:50].reshape(50, 784).astype(np.float32) / 255.0)
    assert (proba.argmax(axis=1) == labels[:50]).mean() >= 0.96


def test_importing_the_module_does_not_need_torch():
    code = "import sys, digitlab.training.cnn; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_arch_strings_build_the_layers_they_name():
    torch = pytest.importorskip("torch")
    net = cnn_net.build_network("c8k5,p,c16,p,c32")
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(8, (5, 5)), (16, (3, 3)), (32, (3, 3))]
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert cnn_net.architecture_summary("c8k5,p,c16").startswith("conv5x5(8)-BN-ReLU, maxpool2, conv3x3(16)")
    for bad in ("c8,x", "p,p", "ck3", "c8k"):
        with pytest.raises(ValueError):
            cnn_net.build_network(bad)


def test_weight_average_follows_the_live_weights_with_a_ramped_decay():
    torch = pytest.importorskip("torch")
    net = cnn_net.build_network("c4,p,c8")
    average = cnn._WeightAverage(net, decay=0.99)
    live_w = net[0].weight
    before = average.net[0].weight.detach().clone()
    with torch.no_grad():
        live_w.add_(1.0)
        net[1].running_mean.add_(2.0)  # BN statistics are averaged too
    average.update()  # step 1: decay min(0.99, 2 / 11) -> moves 9/11 of the way
    moved = average.net[0].weight.detach() - before
    torch.testing.assert_close(moved, torch.full_like(moved, 9 / 11))
    torch.testing.assert_close(average.net[1].running_mean, torch.full((4,), 2.0 * 9 / 11))
    assert average.net[0].weight is not live_w  # a separate copy, not the live module


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 10)) * 4
    p = np.exp(log_softmax(logits / 2.5, axis=1))
    labels = np.array([rng.choice(10, p=row) for row in p])
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)
    assert calibration.nll(logits, labels, calibration.fit_temperature(logits, labels)) <= calibration.nll(logits, labels, 1.0)


# --- training (torch only) -------------------------------------------------------------------------


def test_augment_batch_is_seeded_and_keeps_range():
    torch = pytest.importorskip("torch")
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0  # a bar
    a = cnn_augment.augment_batch(x, torch.Generator().manual_seed(3))
    b = cnn_augment.augment_batch(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, x)
    assert (a.flatten(1).sum(1) > 10).all()  # no digit is wiped out


@pytest.mark.parametrize("bf16", [False, True])
def test_train_network_is_deterministic(mnist_dir, bf16):
    pytest.importorskip("torch")
    from digitlab.data import load_mnist

    images, labels = load_mnist("train", directory=mnist_dir, download=False, limit=384)
    config = cnn.TrainConfig(epochs=1, seed=7, arch="c8k5,p,c16,p,c16", bf16=bf16)
    runs = [
        cnn.train_network(images[:320], labels[:320], images[320:], labels[320:], config, progress=False)
        for _ in range(2)
    ]
    (net1, hist1), (net2, hist2) = runs
    for (k, v1), v2 in zip(net1.state_dict().items(), net2.state_dict().values()):
        assert (v1 == v2).all(), k
    assert hist1[0]["loss"] == hist2[0]["loss"]
    floats = [v for v in net1.state_dict().values() if v.dtype.is_floating_point]
    assert floats and all(str(v.dtype) == "torch.float32" for v in floats)  # bfloat16 only inside the forward pass


def test_bf16_training_runs_the_forward_pass_in_bfloat16(mnist_dir):
    """bf16=True is autocast, not a no-op: the same seed gives another network (the weights stay float32)."""
    pytest.importorskip("torch")
    from digitlab.data import load_mnist

    images, labels = load_mnist("train", directory=mnist_dir, download=False, limit=384)
    losses = []
    for bf16 in (False, True):
        config = cnn.TrainConfig(epochs=1, seed=7, arch="c8k5,p,c16,p,c16", bf16=bf16)
        _, history = cnn.train_network(images[:320], labels[:320], images[320:], labels[320:], config, progress=False)
        losses.append(history[0]["loss"])
    assert losses[0] != losses[1]
    assert abs(losses[0] - losses[1]) < 0.05 * losses[0]  # the same training, in another precision
    assert isinstance(cnn.bf16_is_fast(), bool)


def test_tiny_training_run_exports_a_valid_onnx(tmp_path, mnist_dir):
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    extra = (np.zeros((40, 28, 28), np.uint8), np.full(40, 3, np.uint8))
    extra[0][:, 4:24, 10:18] = 255
    manifest = cnn.train_cnn(
        tmp_path, epochs=1, seed=1, limit=2000, progress=False, extra_data=extra, mnist_dir=mnist_dir,
        test_limit=500,
    )  # fmt: skip
    payload = (tmp_path / "cnn.onnx").read_bytes()
    assert json.loads((tmp_path / "cnn.json").read_text()) == manifest
    assert MANIFEST_KEYS <= manifest.keys()
    assert manifest["sha256"] == hashlib.sha256(payload).hexdigest()
    assert manifest["train_samples"] == 1800 + 40 and manifest["params"]["extra_samples"] == 40
    assert 0.0 <= manifest["metrics"]["mnist_test_accuracy"] <= 1.0
    assert manifest["metrics"]["mnist_test_samples"] == 500
    assert np.asarray(manifest["confusion_matrix"]).sum() == 500
    onnx.checker.check_model(onnx.load_from_string(payload))
    session = make_session(payload)
    proba = session.run(["probabilities"], {"input": np.random.default_rng(0).random((3, 784), np.float32)})[
        0
    ]
    assert proba.shape == (3, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_train_cnn_rejects_bad_extra_data(tmp_path, mnist_dir):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="extra_data"):
        cnn.train_cnn(
            tmp_path, epochs=1, limit=100, progress=False, mnist_dir=mnist_dir,
            extra_data=(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.uint8)),
        )  # fmt: skip


def test_merged_members_answer_the_mean_of_their_logits():
    torch = pytest.importorskip("torch")
    arch = "c8,p,c16,c16,p,c24"
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = cnn_net.build_network(arch)
        for layer in net:  # non-trivial batch-norm statistics, as after training
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.data.uniform_(0.5, 1.5)
                layer.bias.data.uniform_(-0.2, 0.2)
        nets.append(net.eval())
    merged = cnn_net.merge_members(nets, arch)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([net(x) for net in nets]).mean(0)
        np.testing.assert_allclose(merged(x).numpy(), expected.numpy(), atol=1e-5)
    # the fine-tuner rebuilds the grouped chain from the exported graph with the same answers
    from digitlab.training.cnn_finetune import network_from_onnx

    payload = cnn_net.export_onnx(merged, 2.0)
    proba, own = make_session(payload).run(["probabilities", "member_probabilities"], {"input": x.reshape(5, 784).numpy()})
    assert own.shape == (5, 3, 10)  # each network's own answer, beside the merged one
    mean_log = np.log(own.astype(np.float64)).mean(axis=1)
    np.testing.assert_allclose(np.exp(log_softmax(mean_log, axis=1)), proba, atol=1e-5)
    rebuilt, temperature = network_from_onnx(payload)  # (it stops at the served probabilities)
    assert temperature == pytest.approx(2.0)
    with torch.no_grad():
        np.testing.assert_allclose(rebuilt.eval()(x).numpy(), expected.numpy(), atol=1e-4)


def test_finetune_learns_users_and_mixes_back_the_served_weights(mnist_dir):
    torch = pytest.importorskip("torch")
    from digitlab.data import load_mnist
    from digitlab.training.cnn_finetune import finetune, network_from_onnx

    images, labels = load_mnist("train", directory=mnist_dir, download=False, limit=300)
    torch.manual_seed(0)
    served = cnn_net.export_onnx(cnn_net.build_network("c8,p,c16,p,c16").eval(), 1.5)
    user = (images[:40], labels[:40].astype(np.int64))
    base = (images[40:], labels[40:])

    def weights(payload):
        net, temperature = network_from_onnx(payload)
        assert temperature == pytest.approx(1.5)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    before = weights(served)
    candidates = finetune(served, user, base, weight=2, shares=(0.0, 0.5, 1.0))
    kept, half, full = (weights(candidates[share]) for share in (0.0, 0.5, 1.0))
    torch.testing.assert_close(kept, before)
    assert not torch.allclose(full, before)
    torch.testing.assert_close(half, (before + full) / 2, atol=1e-5, rtol=1e-4)


def test_settling_on_real_handwriting_rewrites_the_artefact_and_says_so(tmp_path, mnist_dir):
    """`digitlab train cnn`'s last step: the trained CNN fine-tuned on real handwriting (here: a few MNIST
    digits in its place), half of the change kept, scored again on MNIST test and written back."""
    pytest.importorskip("torch")
    from digitlab.data import load_mnist

    images, labels = load_mnist("train", directory=mnist_dir, download=False, limit=300)
    cnn.train_cnn(tmp_path, epochs=1, seed=1, limit=2000, progress=False, mnist_dir=mnist_dir, test_limit=500)
    trained = (tmp_path / "cnn.onnx").read_bytes()
    manifest = cnn.settle_on_real_handwriting(
        tmp_path, (images[:60], labels[:60]), (images[60:], labels[60:]), mnist_dir=mnist_dir, test_limit=500
    )
    payload = (tmp_path / "cnn.onnx").read_bytes()
    assert payload != trained and json.loads((tmp_path / "cnn.json").read_text()) == manifest
    assert manifest["sha256"] == hashlib.sha256(payload).hexdigest() and MANIFEST_KEYS <= manifest.keys()
    settled = manifest["params"]["settled_on_real_handwriting"]
    assert (settled["real_images"], settled["base_images"], settled["share"]) == (60, 240, cnn.SETTLE_SHARE)
    assert np.asarray(manifest["confusion_matrix"]).sum() == 500
    assert np.trace(manifest["confusion_matrix"]) / 500 == pytest.approx(manifest["metrics"]["mnist_test_accuracy"])
    proba = make_session(payload).run(["probabilities"], {"input": images[:5].reshape(5, 784).astype(np.float32) / 255})[0]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)

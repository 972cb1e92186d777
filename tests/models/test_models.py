import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from digitlab.data import load_mnist
from digitlab.models import CLASSICAL_MODELS, ArtifactError, ModelRegistry, load_model
from digitlab.models.rbf_svc import FastRBFSVC


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    X, y = load_mnist("test", directory=mnist_dir, limit=1000)
    return X.reshape(-1, 784).astype(np.float32) / 255.0, y


def test_fast_rbf_svc_matches_libsvm():
    X, y = load_digits(return_X_y=True)
    svc = SVC(C=10, gamma="scale").fit(X[:1000] / 16, y[:1000])
    fast = FastRBFSVC(svc).fit()
    expected = svc.decision_function(X[1000:] / 16)
    np.testing.assert_allclose(fast.decision_function(X[1000:] / 16), expected, atol=1e-9)


def test_tiny_models_are_real_classifiers(tiny_model_dir, test_images):
    X, y = test_images
    for name in CLASSICAL_MODELS:
        model = load_model(name, tiny_model_dir)
        proba = model.predict_proba(X)
        assert proba.shape == (len(X), 10)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        accuracy = (proba.argmax(axis=1) == y).mean()
        assert accuracy > 0.88, (name, accuracy)  # 2,000 training images; the full set gives ≥ 98 %
        confidence = proba.max(axis=1)
        right = proba.argmax(axis=1) == y
        assert confidence[right].mean() > confidence[~right].mean(), name
        # one sample gives the same answer as the batch
        np.testing.assert_allclose(model.predict_proba(X[:1])[0], proba[0], atol=1e-5)
        manifest = model.manifest
        assert manifest["train_samples"] == 2000
        assert 0.88 < manifest["metrics"]["mnist_test_accuracy"] <= 1
        assert np.asarray(manifest["confusion_matrix"]).sum() == 10000


def test_tree_models_are_served_as_flat_forests(tiny_model_dir):
    from digitlab.models.forest import FlatForest

    for name in ("extra_trees", "random_forest"):
        forest = load_model(name, tiny_model_dir).estimator[-1]
        assert isinstance(forest, FlatForest) and forest.n_estimators == 100


def test_tampered_artefact_is_refused_before_unpickling(tiny_model_dir, tmp_path):
    for suffix in (".joblib", ".json"):
        (tmp_path / f"svm{suffix}").write_bytes((tiny_model_dir / f"svm{suffix}").read_bytes())
    with open(tmp_path / "svm.joblib", "ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(ArtifactError) as err:
        load_model("svm", tmp_path)
    message = str(err.value)
    assert "svm.joblib" in message and "SHA-256" in message and "digitlab train svm" in message
    assert "\n" not in message


@pytest.mark.parametrize("junk", [b"not a pickle at all", None])
def test_an_artefact_that_passes_its_checksum_but_cannot_load_is_one_model_not_served(tiny_model_dir, tmp_path, junk):
    """Bytes that hash right but do not load (built by other library versions; here junk, or a pickled
    list) raised from deep in joblib: every API worker died at start, and `digitlab serve` exited 0."""
    import hashlib
    import io

    import joblib

    for name in CLASSICAL_MODELS:
        for suffix in (".joblib", ".json"):
            shutil.copy(tiny_model_dir / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    if junk is None:
        buffer = io.BytesIO()
        joblib.dump([1, 2, 3], buffer)
        junk = buffer.getvalue()
    (tmp_path / "svm_pca.joblib").write_bytes(junk)
    manifest = json.loads((tmp_path / "svm_pca.json").read_text())
    manifest.update(sha256=hashlib.sha256(junk).hexdigest(), size_bytes=len(junk))
    (tmp_path / "svm_pca.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="passed its checksum but cannot be loaded") as err:
        load_model("svm_pca", tmp_path)
    assert "digitlab train svm_pca" in str(err.value) and "\n" not in str(err.value)
    registry = ModelRegistry(tmp_path).load_all()
    assert registry.status()["svm_pca"] == "missing" and "svm_pca" in registry.errors()
    assert all(registry.status()[n] == "ready" for n in CLASSICAL_MODELS if n != "svm_pca")
    manifest["artifact"] = None  # a manifest whose fields are not strings: "not a digitlab manifest"
    (tmp_path / "svm_pca.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a digitlab manifest"):
        load_model("svm_pca", tmp_path)


def test_missing_and_unknown_models(tmp_path):
    with pytest.raises(ArtifactError, match="digitlab train svm"):
        load_model("svm", tmp_path)
    with pytest.raises(ArtifactError, match="unknown model"):
        load_model("../../etc/passwd", tmp_path)


def test_registry_statuses(tiny_model_dir, tmp_path):
    registry = ModelRegistry(tiny_model_dir).load_all()
    status = registry.status()
    assert all(status[name] == "ready" for name in CLASSICAL_MODELS)
    assert registry.default_name() == registry.ready_names()[0]
    empty = ModelRegistry(tmp_path)
    (tmp_path / "svm.training").touch()
    empty.load_all()
    assert empty.status()["svm"] == "training"
    assert empty.status()["extra_trees"] == "missing"
    # trained since the last scan: still "training" until it is loaded (it said "missing" for a few seconds)
    (tmp_path / "svm.training").unlink()
    for suffix in (".joblib", ".json"):
        shutil.copy(tiny_model_dir / f"random_forest{suffix}", tmp_path / f"random_forest{suffix}")
    assert empty.status()["random_forest"] == "training" and empty.status()["svm"] == "missing"
    empty.load_all()
    assert empty.status()["random_forest"] == "ready"
    (tmp_path / "svm.json").write_text("{broken")  # files that fail to load are not "training"
    empty.load_all()
    assert empty.status()["svm"] == "missing"


def test_the_cnn_asks_the_svm_when_it_is_not_sure(partnered_model_dir, test_images):
    """Served from the registry, the CNN answers alone when sure and with the SVM's opinion mixed in (the
    normalised geometric mean) when its top probability is under SECOND_OPINION_BELOW; stored answers name both."""
    from digitlab.models.registry import SECOND_OPINION_BELOW, load_served

    X, _ = test_images
    noisy = np.clip(X[:200] + np.random.default_rng(0).random((200, 784)).astype(np.float32) * 0.8, 0, 1)
    X = np.concatenate([X[:300], noisy])
    registry = ModelRegistry(partnered_model_dir).load_all()
    served, svm = registry.get("cnn"), registry.get("svm")
    assert served.partner is svm and served.answer_version == f"{served.version}+svm:{svm.version}"
    alone = load_model("cnn", partnered_model_dir)
    assert alone.partner is None and alone.answer_version == str(alone.version)
    own, theirs = alone.predict_proba(X), svm.predict_proba(X)
    unsure = own.max(axis=1) < SECOND_OPINION_BELOW
    assert 10 <= unsure.sum() <= len(X) - 10  # both kinds of row are here
    expected = own.copy()
    geometric = np.sqrt((own[unsure] + 1e-6) * (theirs[unsure] + 1e-6))
    expected[unsure] = geometric / geometric.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(served.predict_proba(X), expected, atol=1e-6)
    proba, opinion = served.predict_with_opinion(X)
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    np.testing.assert_allclose(opinion, alone.predict_with_opinion(X)[1], atol=1e-6)  # the networks' own, unmixed
    assert load_served("cnn", partnered_model_dir).answer_version == served.answer_version

    # a promoted svm version is the one asked from then on; without an svm the CNN answers alone
    newer = load_model("svm", partnered_model_dir)
    newer.manifest["version"] = "7"
    registry.install(newer, learned=True)
    assert registry.get("cnn").partner is newer and registry.get("cnn").answer_version.endswith("+svm:7")
    registry.forget_learned("svm")
    assert registry.get("cnn").partner is None
    np.testing.assert_allclose(registry.get("cnn").predict_proba(X), own, atol=1e-6)


def test_an_svm_that_did_not_learn_all_of_mnist_and_real_handwriting_is_not_asked(tiny_model_dir, tmp_path):
    """A weaker partner made the CNN worse on real handwriting (registry.PARTNER_MIN_SAMPLES): the tiny svm
    (2,000 MNIST images, no real handwriting) is not asked, nor one of all of MNIST without real handwriting
    (the Docker image's); once its manifest says both, it is."""
    from digitlab.models.registry import load_served
    from partners import as_fully_trained

    for path in tiny_model_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, tmp_path / path.name)
    assert ModelRegistry(tmp_path).load_all().get("cnn").partner is None
    assert load_served("cnn", tmp_path).partner is None
    manifest = json.loads((tmp_path / "svm.json").read_text())
    manifest["train_samples"] = 68_000  # all of MNIST and the style drawings, no real handwriting
    (tmp_path / "svm.json").write_text(json.dumps(manifest))
    assert ModelRegistry(tmp_path).load_all().get("cnn").partner is None
    as_fully_trained(tmp_path)
    registry = ModelRegistry(tmp_path).load_all()
    assert registry.get("cnn").partner is registry.get("svm")
    assert load_served("cnn", tmp_path).partner is not None
    quick = load_model("svm", tmp_path)
    quick.manifest["train_samples"] = 4_000  # a learned version from a quick start: not asked from then on
    registry.install(quick, learned=True)
    assert registry.get("cnn").partner is None


def test_a_partner_that_fails_leaves_the_cnn_answering_alone(partnered_model_dir, test_images, caplog):
    from digitlab.models.registry import load_served

    X, _ = test_images
    X = np.concatenate([X[:50], np.clip(X[:50] * 0.3 + 0.4, 0, 1)])
    served = load_served("cnn", partnered_model_dir)
    alone = load_model("cnn", partnered_model_dir).predict_proba(X)

    class Broken:
        def predict_proba(self, X):
            raise RuntimeError("broken svm")

    served.partner.estimator = Broken()
    np.testing.assert_allclose(served.predict_proba(X), alone, atol=1e-6)
    assert "could not ask svm" in caplog.text


def test_evaluate_cli_json(tiny_model_dir, mnist_dir, monkeypatch):
    env = {"DIGITLAB_MODEL_DIR": str(tiny_model_dir), "DIGITLAB_MNIST_DIR": str(mnist_dir), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "digitlab", "evaluate", "svm", "extra_trees", "--json"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == {"svm", "extra_trees"}
    for row in report.values():
        assert row["mnist_test_accuracy"] == pytest.approx(1 - row["errors"] / 10000, abs=1e-4)
    # each model said as it is scored (a run printed nothing until its table, half a minute or more)
    said = [line for line in out.stderr.splitlines() if "on the 10,000 MNIST test images" in line]
    assert [line.split(":")[0] for line in said] == ["svm", "extra_trees"], out.stderr


def test_evaluate_scores_in_chunks_alike(tiny_model_dir, mnist_dir):
    """Scored 500 images a call (one call on all 10,000 held a Ctrl-C up to 23 s): the same figures."""
    from digitlab.data import load_mnist
    from digitlab.evaluation import mnist as evaluation
    from digitlab.models.registry import load_served

    (row,) = evaluation.evaluate_models(["svm"], tiny_model_dir, mnist_dir=mnist_dir)
    X, y = load_mnist("test", directory=mnist_dir)
    whole = load_served("svm", tiny_model_dir).predict_proba(X.reshape(len(X), 784).astype(np.float32) / 255.0)
    assert row["errors"] == int((whole.argmax(axis=1) != y).sum()) and evaluation.CHUNK < len(X)


def test_evaluate_cli_names_the_bad_file(tiny_model_dir, tmp_path, mnist_dir):
    for suffix in (".joblib", ".json"):
        (tmp_path / f"svm{suffix}").write_bytes((tiny_model_dir / f"svm{suffix}").read_bytes())
    (tmp_path / "svm.joblib").write_bytes(b"not the trained model")
    env = {"DIGITLAB_MODEL_DIR": str(tmp_path), "DIGITLAB_MNIST_DIR": str(mnist_dir), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "digitlab", "evaluate", "svm"], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "svm.joblib" in lines[0] and "digitlab train svm" in lines[0]


def test_evaluate_of_every_model_leaves_out_a_damaged_one(tiny_model_dir, tmp_path, mnist_dir):
    """`evaluate` with no names stopped at the first damaged file (no table at all) where `--drawn` leaves it
    out: it scores the others and says which one it left out and why; named, a damaged model is still an error."""
    for name in ("svm", "extra_trees"):
        for suffix in (".joblib", ".json"):
            shutil.copy(tiny_model_dir / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    (tmp_path / "svm.joblib").write_bytes(b"not the trained model")
    env = {"DIGITLAB_MODEL_DIR": str(tmp_path), "DIGITLAB_MNIST_DIR": str(mnist_dir), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "digitlab", "evaluate", "--json"], env=env, capture_output=True,
                         text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)) == {"cnn", "extra_trees"}
    lines = [line for line in out.stderr.strip().splitlines() if "MNIST test images" not in line]  # (progress)
    assert len(lines) == 1 and lines[0].startswith("svm: not scored:") and "digitlab train svm" in lines[0]


def test_evaluate_says_when_only_the_bundled_cnn_is_there(tmp_path, mnist_dir, tiny_model_dir):
    """A model folder with no trained model (a typo, a fresh machine) scored the packaged CNN without a word."""
    env = {"DIGITLAB_MODEL_DIR": str(tmp_path / "nothing-here"), "DIGITLAB_MNIST_DIR": str(mnist_dir),
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "digitlab", "evaluate", "--json"], env=env, capture_output=True,
                         text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)) == {"cnn"}
    assert out.stderr.startswith("note: no trained model in") and "only the bundled CNN" in out.stderr
    env["DIGITLAB_MODEL_DIR"] = str(tiny_model_dir)  # trained models there: nothing to say
    out = subprocess.run([sys.executable, "-m", "digitlab", "evaluate", "--json"], env=env,
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0 and "svm" in json.loads(out.stdout) and "note:" not in out.stderr


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_train_stopped_by_a_signal_leaves_no_training_marker(tmp_path, mnist_dir, signum):
    """Ctrl-C removed the "<name>.training" markers, SIGTERM (compose, Kubernetes, kill) and SIGHUP left them:
    the API said "training" for good."""
    import os
    import signal
    import time

    env = {**os.environ, "DIGITLAB_MODEL_DIR": str(tmp_path / "models"), "DIGITLAB_MNIST_DIR": str(mnist_dir),
           "DIGITLAB_HANDWRITING_DIR": str(tmp_path / "none"), "DIGITLAB_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "digitlab", "train", "svm", "--limit", "2000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    marker = tmp_path / "models" / "svm.training"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.poll()
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "stopped by signal" in err, err[-500:]
    assert not marker.exists() and not (tmp_path / "models" / "svm.json").exists(), err[-3000:]


def test_a_quick_training_stopped_half_way_says_what_it_replaced(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """Each model is written whole when it is done, so a quick run stopped half-way keeps the ones it finished:
    it said nothing of a stronger model it had replaced (a probe, session 45: 99.4 % swapped for 98.6 %)."""
    from types import SimpleNamespace

    from digitlab.cli import train as cli_train

    models = tmp_path / "models"
    models.mkdir()
    for path in tiny_model_dir.glob("extra_trees.*"):
        shutil.copy2(path, models / path.name)
    manifest = json.loads((models / "extra_trees.json").read_text())
    manifest["metrics"]["mnist_test_accuracy"] = 0.999
    (models / "extra_trees.json").write_text(json.dumps(manifest))

    def finished_one_then_stopped(*_args, **_kwargs):
        manifest["metrics"]["mnist_test_accuracy"] = 0.85  # the quick one, written whole...
        (models / "extra_trees.json").write_text(json.dumps(manifest))
        raise KeyboardInterrupt  # ...then Ctrl-C during the next

    monkeypatch.setattr(cli_train, "_train_each", finished_one_then_stopped)
    with pytest.raises(KeyboardInterrupt):
        cli_train._train(SimpleNamespace(model_dir=models), ["extra_trees", "svm"], limit=100, jobs=1,
                         calibrate_only=False, out_dir=None)  # fmt: skip
    err = capsys.readouterr().err
    assert "note: extra_trees is now a quick model from 100 images: 85.0 %" in err and "had 99.9 %" in err, err


def test_a_quick_training_says_it_replaced_a_stronger_model(tmp_path, mnist_dir, tiny_model_dir):
    """`train cnn --limit 100` replaced the bundled CNN (99 %) with one at chance level and said nothing."""
    import os

    models = tmp_path / "models"
    models.mkdir()
    for path in tiny_model_dir.glob("extra_trees.*"):
        shutil.copy2(path, models / path.name)
    manifest = json.loads((models / "extra_trees.json").read_text())
    manifest["metrics"]["mnist_test_accuracy"] = 0.999  # the one served now: stronger than any quick one
    (models / "extra_trees.json").write_text(json.dumps(manifest))
    env = {**os.environ, "DIGITLAB_MODEL_DIR": str(models), "DIGITLAB_MNIST_DIR": str(mnist_dir),
           "DIGITLAB_HANDWRITING_DIR": str(tmp_path / "none"), "DIGITLAB_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "digitlab", "train", "extra_trees", "--limit", "100"], env=env,
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-800:]
    assert "note: extra_trees is now a quick model from 100 images" in out.stderr, out.stderr[-800:]
    assert "where the one it replaced had 99.9 %" in out.stderr and "`digitlab train extra_trees` (no --limit)" in out.stderr
    out = subprocess.run([sys.executable, "-m", "digitlab", "train", "extra_trees", "--limit", "100"], env=env,
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0 and "note: extra_trees is now a quick model" not in out.stderr  # quick replaced quick

"""The API contract over a real running server (uvicorn subprocess, real models, real database)."""

from __future__ import annotations

import base64
import io
import math

import httpx
import pytest
from PIL import Image

from .conftest import ADMIN_TOKEN, MISSING, READY, TRAINING, assert_error, draw_digit


def png_ok(data: bytes, size: tuple[int, int] | None = None) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    if size:
        assert im.size == size
    return im


def assert_prediction(p: dict, model: str | None = None) -> None:
    assert set(p) >= {
        "id",
        "uid",
        "model",
        "digit",
        "confidence",
        "probabilities",
        "processed_image",
        "latency_ms",
        "logged",
        "uncertain",
        "model_version",
    }
    if model:
        assert p["model"] == model
    assert isinstance(p["digit"], int) and 0 <= p["digit"] <= 9
    assert len(p["probabilities"]) == 10
    assert math.isclose(sum(p["probabilities"]), 1.0, abs_tol=1e-6)
    assert p["confidence"] == pytest.approx(max(p["probabilities"]))
    assert p["probabilities"].index(max(p["probabilities"])) == p["digit"]
    assert p["uncertain"] == (p["confidence"] < 0.5)
    assert p["latency_ms"] > 0
    im = png_ok(base64.b64decode(p["processed_image"]), (28, 28))
    assert im.mode == "L"
    assert p["logged"] is True
    assert isinstance(p["id"], int) and p["id"] > 0
    assert len(p["uid"]) == 32


# --- health, models, docs ----------------------------------------------------------------------------


def test_health_reports_every_part(api):
    r = api.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"status", "models", "database", "spool", "components"}
    assert body["components"] == {"detector": "ready", "segment_verifier": "ready", "line_reader": "ready"}
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["spool"] == 0
    for name in READY:
        assert body["models"][name] == "ready"
    assert body["models"][TRAINING] == "training"
    assert body["models"][MISSING] == "missing"
    assert body["models"]["cnn"] in ("ready", "missing")


def test_models_list(api):
    r = api.get("/api/v1/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()}
    assert set(models) == {"cnn", "svm", "svm_pca", "extra_trees", "random_forest"}
    defaults = [m for m in models.values() if m["default"]]
    assert len(defaults) == 1 and defaults[0]["status"] == "ready"
    svm = models["svm"]
    assert svm["status"] == "ready" and svm["display_name"] and svm["description"] and svm["version"]
    assert 0.5 < svm["metrics"]["mnist_test_accuracy"] <= 1.0
    assert len(svm["confusion_matrix"]) == 10 and all(len(row) == 10 for row in svm["confusion_matrix"])
    assert svm["size_bytes"] > 0 and svm["trained_at"] and svm["training_seconds"] >= 0
    assert models[TRAINING]["status"] == "training" and models[TRAINING]["metrics"] == {}
    assert models[MISSING]["status"] == "missing" and models[MISSING]["default"] is False


def test_openapi_and_docs(api):
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    for path in [
        "/health",
        "/api/v1/models",
        "/api/v1/predict",
        "/api/v1/predictions",
        "/api/v1/predictions/{prediction_id}/feedback",
        "/api/v1/predictions/uid/{uid}/feedback",
        "/api/v1/predictions/{prediction_id}/image",
        "/api/v1/predictions/{prediction_id}",
        "/api/v1/stats",
        "/api/v1/export.csv",
        "/metrics",
    ]:
        assert path in paths, path
    body = paths["/api/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.parametrize("range_header", ["bytes=abc", "bytes=999999999-", "bytes=0-9"])
def test_docs_assets_are_sent_whole_whatever_range_asks(api, range_header):
    """A malformed or unsatisfiable Range got a plain-text 400 or an empty 416 (every other error is JSON; a
    probe, session 27): the files are sent whole."""
    whole = api.get("/docs-assets/swagger-ui.css")
    r = api.get("/docs-assets/swagger-ui.css", headers={"Range": range_header})
    assert whole.status_code == r.status_code == 200 and r.content == whole.content and len(r.content) > 1000


def test_openapi_states_what_the_server_enforces(api):
    """Every error a route documents has the one error shape, and parameter bounds are JSON Schema's
    `minimum` / `maximum` (pydantic's `ge` / `le` in a schema bind no client: they were there for pages)."""
    spec = api.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec.get("components", {}).get("schemas", {})
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for status, answer in op.get("responses", {}).items():
                if status.startswith(("4", "5")):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
            for param in op.get("parameters", []):
                assert not {"ge", "le", "gt", "lt"} & set(param["schema"]), (method, path, param)
    page_size = next(p for p in spec["paths"]["/api/v1/predictions"]["get"]["parameters"] if p["name"] == "page_size")
    assert (page_size["schema"]["minimum"], page_size["schema"]["maximum"]) == (1, 500)


# --- predict -------------------------------------------------------------------------------------------


def test_predict_multipart_default_model(api, sample_png):
    models = {m["name"]: m for m in api.get("/api/v1/models").json()}
    default = next(n for n, m in models.items() if m["default"])
    r = api.post("/api/v1/predict", files={"image": ("drawing.png", sample_png, "image/png")})
    assert r.status_code == 200, r.text
    p = r.json()
    assert_prediction(p, default)
    assert p["digit"] == 7


@pytest.mark.parametrize("model", READY)
def test_predict_each_model_json_base64(api, sample_png, model):
    r = api.post("/api/v1/predict", json={"image": base64.b64encode(sample_png).decode(), "model": model})
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), model)


def test_predict_all_models(api, sample_png):
    r = api.post(
        "/api/v1/predict", files={"image": ("d.png", sample_png, "image/png")}, data={"model": "all"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"predictions", "processed_image"}
    names = [p["model"] for p in body["predictions"]]
    ready = [n for n, s in api.get("/health").json()["models"].items() if s == "ready"]
    assert sorted(names) == sorted(ready)
    for p in body["predictions"]:
        assert_prediction(p)
        assert p["processed_image"] == body["processed_image"]  # one preprocessing for every model
    assert len({p["id"] for p in body["predictions"]}) == len(names)


def test_predict_all_fields_and_formats(api):
    """Light pen on dark, as JPEG, WebP and BMP, with colour hints, a data: URL, true_digit and source."""
    for fmt in ("JPEG", "WEBP", "BMP"):
        data = draw_digit(pen="#f0f0f0", bg="#202020", fmt=fmt)
        r = api.post(
            "/api/v1/predict",
            files={"image": ("x.bin", data, "application/octet-stream")},  # the declared type is ignored
            data={
                "model": "svm",
                "true_digit": "7",
                "pen_color": "#f0f0f0",
                "background_color": "#202020",
                "session_id": "abc-123",
                "source": "ui",
            },
        )
        assert r.status_code == 200, (fmt, r.text)
        assert r.json()["digit"] == 7
    url = "data:image/png;base64," + base64.b64encode(draw_digit()).decode()
    r = api.post("/api/v1/predict", json={"image": url, "true_digit": 7, "session_id": "s1", "source": "api"})
    assert r.status_code == 200, r.text
    upper = "DATA:IMAGE/PNG;BASE64," + url.partition(",")[2]  # a URL scheme is case-insensitive (was 422)
    assert api.post("/api/v1/predict", json={"image": upper}).status_code == 200


def test_predict_empty_form_fields_mean_defaults(api, sample_png):
    r = api.post(
        "/api/v1/predict",
        files={"image": ("d.png", sample_png, "image/png")},
        data={"model": "", "true_digit": "", "pen_color": "", "session_id": ""},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/api/v1/predict", "/api/v1/read"])
def test_the_docs_try_it_out_form_stores_no_made_up_answer(api, admin, sample_png, path):
    """/docs' "Try it out" fills a form's fields with their examples: with none it made some up (`model=string`,
    `true_digit=9`), and a newcomer's first try stored a false label. Each optional field's example is now
    empty (or its default), and that form is a plain request."""
    form = api.get("/openapi.json").json()["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
    fields = {name: prop["example"] for name, prop in form["schema"]["properties"].items() if name != "image"}
    assert fields and all(value in ("", "api") for value in fields.values()), fields
    r = api.post(path, files={"image": ("d.png", sample_png, "image/png")}, data=fields)
    assert r.status_code == 200, r.text
    if path.endswith("predict"):
        stored = api.get(f"/api/v1/predictions/{r.json()['id']}", headers=admin).json()
    else:
        pages = api.get("/api/v1/numbers", params={"page_size": 500}, headers=admin).json()["items"]
        (stored,) = [n for n in pages if n["id"] == r.json()["id"]]
    assert stored["session_id"] is None and stored.get("drawn_digit", stored.get("true_text")) is None, stored


def test_numbers_and_predictions_write_times_alike(api, admin, sample_png):
    """/numbers wrote "...Z" and /predictions "...+00:00": one client parsing both met two forms."""
    api.post("/api/v1/predict", files={"image": ("d.png", sample_png, "image/png")})
    api.post("/api/v1/read", files={"image": ("d.png", sample_png, "image/png")})
    digit = api.get("/api/v1/predictions", headers=admin).json()["items"][0]["timestamp"]
    number = api.get("/api/v1/numbers", headers=admin).json()["items"][0]["timestamp"]
    assert digit.endswith("+00:00") and number.endswith("+00:00"), (digit, number)


def test_predict_uncertain_flag_on_non_digits(api, sample_png):
    """A zig-zag and a '#' are no digits: every model flags them; a clear 7 is not flagged."""
    from PIL import ImageDraw

    def png(draw) -> bytes:
        im = Image.new("L", (280, 280), 255)
        draw(ImageDraw.Draw(im))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    zigzag = png(lambda g: g.line([(30, 60), (80, 220), (130, 60), (180, 220), (230, 60), (260, 220)], fill=0,
                                  width=14, joint="curve"))
    grid = png(lambda g: [g.line(xy, fill=0, width=14) for xy in
                          ((90, 30, 90, 250), (190, 30, 190, 250), (30, 100, 250, 100), (30, 190, 250, 190))])
    for image in (zigzag, grid):
        r = api.post("/api/v1/predict", files={"image": ("d.png", image, "image/png")}, data={"model": "all"})
        assert r.status_code == 200
        assert all(p["uncertain"] for p in r.json()["predictions"]), r.json()["predictions"]
    r = api.post("/api/v1/predict", files={"image": ("d.png", sample_png)}, data={"model": "all"})
    assert not any(p["uncertain"] for p in r.json()["predictions"])


# --- documented errors -----------------------------------------------------------------------------------


def test_unknown_model_is_404(api, sample_png):
    r = api.post("/api/v1/predict", files={"image": ("d.png", sample_png)}, data={"model": "resnet"})
    assert_error(r, 404, "unknown_model")


def test_model_training_or_missing_is_503(api, sample_png):
    for name in (TRAINING, MISSING):
        r = api.post("/api/v1/predict", files={"image": ("d.png", sample_png)}, data={"model": name})
        body = assert_error(r, 503, "model_not_ready")
        assert name in body["detail"]
    assert (
        "training"
        in api.post(
            "/api/v1/predict", files={"image": ("d.png", sample_png)}, data={"model": TRAINING}
        ).json()["detail"]
    )


def test_unreadable_and_empty_are_400(api):
    assert_error(
        api.post("/api/v1/predict", files={"image": ("d.png", b"not an image at all")}),
        400,
        "unreadable_image",
    )
    blank = io.BytesIO()
    Image.new("RGB", (280, 280), "white").save(blank, format="PNG")
    assert_error(
        api.post("/api/v1/predict", files={"image": ("d.png", blank.getvalue())}), 400, "empty_image"
    )


def test_unsupported_types_are_415(api):
    gif = io.BytesIO()
    Image.new("L", (50, 50), 255).save(gif, format="GIF")
    assert_error(
        api.post("/api/v1/predict", files={"image": ("d.gif", gif.getvalue())}), 415, "unsupported_media_type"
    )
    r = api.post(
        "/api/v1/predict", content=b"image=abc", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert_error(r, 415, "unsupported_media_type")


def test_body_over_limit_is_413(api):
    r = api.post("/api/v1/predict", files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 5_100_000)})
    assert_error(r, 413, "payload_too_large")


def test_chunked_body_over_limit_is_413(api):
    def chunks():
        for _ in range(60):
            yield b"x" * 100_000  # 6 MB without a Content-Length

    r = api.post("/api/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")


def test_chunked_body_under_limit_is_accepted(api, sample_png):
    body = b'{"image": "' + base64.b64encode(sample_png) + b'"}'

    def chunks():
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    r = api.post("/api/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_bomb_is_refused_from_the_header(api):
    from .test_bad_input import png_claiming

    assert_error(
        api.post("/api/v1/predict", files={"image": ("bomb.png", png_claiming(50000, 50000))}),
        413,
        "image_too_large",
    )


def test_invalid_fields_are_422(api, sample_png):
    files = {"image": ("d.png", sample_png)}
    for data in (
        {"true_digit": "10"},
        {"true_digit": "x"},
        {"true_digit": "07"},  # (read as 7, and "-0" as 0: not "the text of one digit")
        {"true_digit": "-0"},
        {"pen_color": "red"},
        {"source": "robot"},
        {"session_id": "s" * 65},
    ):
        assert_error(api.post("/api/v1/predict", files=files, data=data), 422, "invalid_fields")
    assert_error(
        api.post("/api/v1/predict", data={"model": "svm"}, files={"other": ("x", b"x")}),
        422,
        "invalid_fields",
    )
    assert_error(api.post("/api/v1/predict", json={"model": "svm"}), 422, "invalid_fields")


def test_unknown_route_and_method(api):
    assert_error(api.get("/nothing/here"), 404, "not_found")
    assert_error(api.delete("/health"), 405, "method_not_allowed")


@pytest.mark.parametrize("path", ["/health", "/api/v1/models", "/openapi.json", "/docs"])
def test_head_answers_like_get_without_a_body(api, path):
    """HEAD was 405 on every GET route but /health (a monitor's or a link checker's probe)."""
    got, head = api.get(path), api.head(path)
    assert head.status_code == got.status_code == 200
    assert head.headers["content-type"] == got.headers["content-type"] and head.content == b""


def test_a_405_names_every_method_of_the_path(api):
    """`Allow` named only the first route's methods: GET on a prediction (DELETE too), GET on /health (HEAD)."""
    r = api.put("/api/v1/predictions/1")
    assert_error(r, 405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) >= {"GET", "DELETE"}
    assert set(api.patch("/health").headers["allow"].split(", ")) >= {"GET", "HEAD"}


# --- admin token ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1/predictions"),
        ("GET", "/api/v1/predictions/1"),
        ("GET", "/api/v1/predictions/1/image"),
        ("GET", "/api/v1/export.csv"),
        ("DELETE", "/api/v1/predictions/1"),
    ],
)
def test_protected_routes_need_the_token(api, method, path):
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    ):
        r = api.request(method, path, headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate") == "Bearer"


def test_open_routes_need_no_token(api, sample_png):
    assert api.get("/api/v1/stats").status_code == 200
    r = api.post("/api/v1/predict", files={"image": ("d.png", sample_png)})
    assert r.status_code == 200
    assert (
        api.post(f"/api/v1/predictions/{r.json()['id']}/feedback", json={"true_digit": 7}).status_code == 200
    )


# --- metrics ---------------------------------------------------------------------------------------------


def test_metrics_prometheus_text(api, sample_png):
    api.post("/api/v1/predict", files={"image": ("d.png", sample_png)}, data={"model": "svm"})
    api.post("/api/v1/predict", files={"image": ("d.png", b"junk")}, data={"model": "svm"})
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["digitlab_http_requests"].samples
    assert any(
        s.labels == {"method": "POST", "route": "/api/v1/predict", "status": "200", "model": "svm"}
        and s.value >= 1
        for s in requests
    )
    assert any(s.labels.get("status") == "400" for s in requests)
    hist = families["digitlab_http_request_duration_seconds"].samples
    assert any(s.name.endswith("_bucket") and s.labels.get("model") == "svm" for s in hist)
    digits = families["digitlab_predictions"].samples
    assert any(s.labels == {"model": "svm", "digit": "7"} and s.value >= 1 for s in digits)
    assert "digitlab_store_write_failures" in families
    assert any(s.labels == {"code": "unreadable_image"} for s in families["digitlab_errors"].samples)
    assert families["digitlab_database_up"].samples[0].value == 1
    ready = {s.labels["model"]: s.value for s in families["digitlab_model_ready"].samples}
    assert ready["svm"] == 1 and ready[MISSING] == 0


def test_keep_alive_survives_errors(live_server, sample_png):
    """Errors never poison the connection: one client, many mixed requests, all answered."""
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        for _ in range(5):
            assert c.post("/api/v1/predict", files={"image": ("d.png", b"junk")}).status_code == 400
            assert c.post("/api/v1/predict", files={"image": ("d.png", sample_png)}).status_code == 200
            assert c.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/stats?model=%00", "/api/v1/stats?model=a%00b"])
def test_a_nul_in_a_text_filter_is_refused(api, path):
    """PostgreSQL text cannot hold NUL: it was a 500 there (and SQLite answered 200)."""
    assert_error(api.get(path), 422, "invalid_fields")


def test_openapi_lists_the_answers_given_before_routing(api):
    """A 431 (head too large) can answer any operation, a 408 (body too slow) and a 413 (too large) any that takes
    a body: the document lists them, so a client generated from it knows them (it listed none, session 31's probe)."""
    spec = api.get("/openapi.json").json()
    with_body = without_body = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert "431" in op["responses"], (method, path)
            if "requestBody" in op:
                with_body += 1
                assert {"408", "413"} <= set(op["responses"]), (method, path)
            else:
                without_body += 1
    assert with_body >= 4 and without_body >= 10


def test_two_authorization_headers_are_refused_whichever_comes_first(api):
    """Two `Authorization` headers: the first one was read, whichever was meant (two `Content-Type` headers are a
    400 already; an API probe). Refused either way round; the token sent once works."""
    good, bad = ("authorization", f"Bearer {ADMIN_TOKEN}"), ("authorization", "Bearer wrong")
    for headers in ([good, bad], [bad, good], [good, good]):
        answer = api.get("/api/v1/predictions", headers=headers)
        assert "two Authorization headers" in assert_error(answer, 401, "unauthorized")["detail"]
    assert api.get("/api/v1/predictions", headers=[good]).status_code == 200

"""The REST API through FastAPI's TestClient: predictions equal the in-process predictor's, micro-
batching, 429 past capacity, health / ready / metrics, API key, and every refusal of bad input."""

from __future__ import annotations

import base64
import io
import re
import struct
import threading
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import fovea
from fovea.errors import ConfigError
from fovea.serve.app import ServeConfig, create_app
from fovea.serve.registry import check_model_name, parse_model_spec

from _serve_helpers import png_bytes, textures


@pytest.fixture(scope="module")
def refs(model_dirs):
    """The same checkpoints opened in-process: the reference answers."""
    return {k: fovea.load_predictor(p) for k, p in model_dirs.items()}


@pytest.fixture(scope="module")
def client(model_dirs):
    app = create_app({"cls": model_dirs["cls"], "pc": model_dirs["pc"]}, ServeConfig(max_wait_ms=2.0))
    with TestClient(app) as c:
        yield c


def _files(images, names=None):
    names = names or [f"img{i}.png" for i in range(len(images))]
    return [("file", (n, png_bytes(im), "image/png")) for n, im in zip(names, images)]


def test_predict_several_images_equals_the_in_process_predictor(client, refs):
    imgs = textures(2, 40, 48, 1) + textures(1, 36, 52, 2)  # two sizes: two groups inside one batch
    r = client.post("/api/predict/cls", files=_files(imgs, ["a.png", "b.png", "c.png"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "classify" and body["model"] == "cls"
    assert [p["image"] for p in body["predictions"]] == ["a.png", "b.png", "c.png"]
    for im, rec in zip(imgs, body["predictions"]):
        want = refs["cls"].predict_one(im)
        assert rec["task"] == "classify" and set(rec) == {"task", "image", "result"}
        np.testing.assert_allclose(rec["result"]["probs"], want.probs, atol=1e-5)
        assert rec["result"]["class_name"] == want.class_name


def test_raw_body_anomaly_with_overlay(client, refs):
    img = textures(1, 40, 48, 5)[0]
    img[10:20, 10:24] = 255
    r = client.post("/api/predict/pc?overlay=1", content=png_bytes(img), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    rec = r.json()["predictions"][0]
    want = refs["pc"].predict_one(img)
    assert rec["result"]["kind"] == "anomaly"
    assert rec["result"]["score"] == pytest.approx(want.score, abs=1e-5)
    from fovea.anomaly.report import overlay_png

    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(rec["overlay_png"]))).convert("RGB"))
    assert got.shape == img.shape
    assert np.abs(got.astype(int) - overlay_png(img, want).astype(int)).max() <= 2


def test_jpeg_and_grayscale_uploads_decode_like_files(client, refs):
    gray = textures(1, 40, 48, 7)[0][..., 0]
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    r = client.post("/api/predict/cls", files=[("file", ("g.png", buf.getvalue(), "application/octet-stream"))])
    assert r.status_code == 200, r.text
    want = refs["cls"].predict_one(np.repeat(gray[..., None], 3, 2))
    np.testing.assert_allclose(r.json()["predictions"][0]["result"]["probs"], want.probs, atol=1e-5)


def test_models_health_ready_and_metrics(client):
    assert client.get("/api/health").json() == {"status": "ok"}
    ready = client.get("/api/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert (models["cls"]["task"], models["pc"]["task"]) == ("classify", "anomaly")
    before = _metric(client, 'fovea_serve_latency_seconds_count{model="cls",stage="infer"}')
    client.post("/api/predict/cls", files=_files(textures(3, 32, 32, 9)))
    text = client.get("/metrics").text
    assert _metric(client, 'fovea_serve_latency_seconds_count{model="cls",stage="infer"}') == before + 3
    for stage in ("decode", "queue", "infer", "total"):
        assert f'model="cls",stage="{stage}"' in text
    assert 'fovea_serve_queue_depth{model="cls"}' in text
    doc = client.get("/openapi.json").json()["paths"]["/api/predict/{name}"]["post"]
    assert "multipart/form-data" in doc["requestBody"]["content"] and {"413", "415", "429"} <= set(doc["responses"])


def _metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# ------------------------------------------------------------------------------------- refusals

def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 8-bit gray and whose data holds a few rows of zeros:
    a few hundred bytes that would decode to width*height bytes (the 'pixel bomb')."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def strict(model_dirs):
    """A server with small limits and an API key."""
    app = create_app({"cls": model_dirs["cls"]}, ServeConfig(api_key="s3cret", max_body_bytes=200_000,
                                                             max_pixels=100_000, max_files=4))
    with TestClient(app, headers={"X-API-Key": "s3cret"}) as c:
        yield c


def test_truncated_png_is_400(strict):
    data = png_bytes(textures(1, 64, 64, 1)[0])
    r = strict.post("/api/predict/cls", content=data[: len(data) // 2], headers={"content-type": "image/png"})
    assert r.status_code == 400 and "truncated" in r.json()["detail"]
    r = strict.post("/api/predict/cls", content=b"", headers={"content-type": "image/png"})
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_pixel_bombs_are_413_before_decoding(strict):
    bomb = _png_header_only(60_000, 60_000)      # 3.6 Gpx declared in < 1 KB
    assert len(bomb) < 1000
    r = strict.post("/api/predict/cls", files=[("file", ("bomb.png", bomb, "image/png"))])
    assert r.status_code == 413 and str(60_000 * 60_000) in r.json()["detail"]
    big = np.zeros((400, 400, 3), np.uint8)      # a valid image over this server's 100 000 px
    r = strict.post("/api/predict/cls", content=png_bytes(big), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "160000 pixels" in r.json()["detail"]


def test_wrong_content_types_are_415(strict):
    r = strict.post("/api/predict/cls", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "text/plain" in r.json()["detail"]
    r = strict.post("/api/predict/cls", files=[("file", ("x.zip", b"PK\x03\x04" + bytes(100), "application/zip"))])
    assert r.status_code == 415
    r = strict.post("/api/predict/cls", content=b"PK\x03\x04" + bytes(100), headers={"content-type": "image/png"})
    assert r.status_code == 415 and "not a recognised image format" in r.json()["detail"]


def test_huge_bodies_are_413_declared_or_streamed(strict):
    blob = bytes(300_000)
    r = strict.post("/api/predict/cls", content=blob, headers={"content-type": "image/png"})
    assert r.status_code == 413 and "over the limit of 200000" in r.json()["detail"]

    def chunks():                                # no Content-Length: counted as it arrives
        for _ in range(30):
            yield bytes(10_000)
    r = strict.post("/api/predict/cls", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413
    r = strict.post("/api/predict/cls", files=_files(textures(9, 16, 16, 0)))
    assert r.status_code == 413 and "limit is 4" in r.json()["detail"] and "9 images" in r.json()["detail"]


def test_api_key_is_required_when_set(strict, model_dirs):
    raw = TestClient(strict.app)
    img = png_bytes(textures(1, 32, 32, 2)[0])
    r = raw.post("/api/predict/cls", content=img, headers={"content-type": "image/png"})
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    r = raw.post("/api/predict/cls", content=img, headers={"content-type": "image/png", "X-API-Key": "wrong"})
    assert r.status_code == 401
    assert raw.get("/api/line").status_code == 401 and raw.get("/stream.mjpg").status_code == 401
    assert raw.get("/api/health").status_code == 200 and raw.get("/api/ready").status_code == 200
    r = raw.post("/api/predict/cls?key=s3cret", content=img, headers={"content-type": "image/png"})
    assert r.status_code == 200


@pytest.mark.parametrize("name", ["%2e%2e", "a..b", ".hidden", "~root", "x" * 65, "a%5Cb", "C:evil"])
def test_path_like_model_names_are_refused(strict, name):
    r = strict.post(f"/api/predict/{name}", content=png_bytes(textures(1, 16, 16, 0)[0]),
                    headers={"content-type": "image/png"})
    assert r.status_code == 422 and r.json()["error"] == "bad_model_name"


def test_names_with_slashes_never_route_and_unknown_names_are_404(strict):
    img = png_bytes(textures(1, 16, 16, 0)[0])
    for url in ("/api/predict/..%2F..%2Fetc%2Fpasswd", "/api/predict/a/b", "/api/predict/nothere"):
        r = strict.post(url, content=img, headers={"content-type": "image/png"})
        assert r.status_code == 404, url


def test_model_name_rules_and_specs(tmp_path):
    for bad in ("..", "../x", "a/b", "a\\b", "", ".x", "a..b", "/abs"):
        with pytest.raises(ConfigError):
            check_model_name(bad)
    for good in ("parts", "cls-v2", "pc_1.onnx"):
        assert check_model_name(good) == good
    with pytest.raises(ConfigError, match="NAME=PATH"):
        parse_model_spec("justapath")
    with pytest.raises(ConfigError, match="does not exist"):
        parse_model_spec(f"m={tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="not allowed"):
        parse_model_spec(f"../m={tmp_path}")


# ------------------------------------------------------------------------------------- capacity

class GatedPredictor:
    """Answers each image's mean brightness as a 1-class 'probability'; blocks until `gate` is set."""

    kind = "classify"

    def __init__(self):
        self.gate = threading.Event()
        self.batches: list[int] = []

    def predict(self, images):
        self.gate.wait(30)
        self.batches.append(len(images))
        from fovea.core import ClassResult

        return [ClassResult(np.array([float(im.mean())], np.float32), ("mean",)) for im in images]


def test_queue_full_is_429_with_retry_after_and_nothing_is_lost():
    pred = GatedPredictor()
    app = create_app({"slow": pred}, ServeConfig(max_queue=3, max_batch=2, max_wait_ms=1.0))
    imgs = [np.full((8, 8, 3), 10 * (i + 1), np.uint8) for i in range(6)]
    batcher = app.state.registry.slots["slow"].batcher
    with TestClient(app) as c:
        first = batcher.submit([imgs[0]])        # taken by the worker, which blocks in predict
        _wait(lambda: batcher.depth == 0)
        queued = batcher.submit(imgs[1:3])       # 2 of 3 places taken: a request of two images does not fit
        r = c.post("/api/predict/slow", files=[("file", (f"{i}.png", png_bytes(imgs[i]), "image/png")) for i in (4, 5)])
        assert r.status_code == 429 and "no room for 2 more" in r.json()["detail"]
        queued += batcher.submit(imgs[3:4])      # the queue is full: 3 images
        r = c.post("/api/predict/slow", content=png_bytes(imgs[5]), headers={"content-type": "image/png"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and r.json()["error"] == "queue_full"
        assert 'fovea_serve_rejected_total{reason="queue_full"} 2.0' in c.get("/metrics").text
        pred.gate.set()
        got = [j.future.result(30).probs[0] for j in first + queued]
        assert got == pytest.approx([10.0, 20.0, 30.0, 40.0])   # each caller its own image's answer
        r = c.post("/api/predict/slow", content=png_bytes(imgs[5]), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["predictions"][0]["result"]["probs"][0] == pytest.approx(60.0)
    assert pred.batches[:3] == [1, 2, 1]         # the queued three ran as batches of at most max_batch


def _wait(cond, n: int = 1000):
    import time

    for _ in range(n):
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_ready_is_503_when_a_worker_is_down(model_dirs):
    app = create_app({"slow": GatedPredictor()})
    with TestClient(app) as c:
        app.state.registry.slots["slow"].batcher.close(timeout_s=0.1)
        r = c.get("/api/ready")
        assert r.status_code == 503 and r.json()["down"] == ["slow"]


def test_hot_swap_reload_serves_the_new_weights(model_dirs, tmp_path, refs):
    import shutil

    from _serve_helpers import build_classifier
    import torch

    path = tmp_path / "swap"
    shutil.copytree(model_dirs["cls"], path)
    app = create_app({"m": path})
    img = textures(1, 32, 32, 4)[0]
    with TestClient(app) as c:
        first = c.post("/api/predict/m", content=png_bytes(img), headers={"content-type": "image/png"}).json()
        np.testing.assert_allclose(first["predictions"][0]["result"]["probs"], refs["cls"].predict_one(img).probs,
                                   atol=1e-5)
        new = build_classifier()
        with torch.no_grad():
            new.pipeline.backbone.get_classifier().bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
        shutil.rmtree(path)
        new.save(path)
        r = c.post("/api/models/m/reload")
        assert r.status_code == 200 and r.json()["version"] == 2
        second = c.post("/api/predict/m", content=png_bytes(img), headers={"content-type": "image/png"}).json()
        assert second["version"] == 2
        np.testing.assert_allclose(second["predictions"][0]["result"]["probs"], new.predict_one(img).probs,
                                   atol=1e-5)
        assert not np.allclose(second["predictions"][0]["result"]["probs"], first["predictions"][0]["result"]["probs"])
        assert c.post("/api/models/nothere/reload").status_code == 404


def test_multipart_without_file_field_is_400(client):
    r = client.post("/api/predict/cls", data={"image": "x"}, files=[("other", ("a.png", b"x", "image/png"))])
    assert r.status_code == 400 and "`file`" in r.json()["detail"]
    assert re.search("fovea_serve_rejected_total", client.get("/metrics").text)


def test_reports_are_listed_and_served_read_only(tmp_path):
    runs = tmp_path / "runs"
    (runs / "bricks").mkdir(parents=True)
    (runs / "bricks" / "report.html").write_text("<html>bricks report</html>")
    (tmp_path / "secret.txt").write_text("not for the web")
    app = create_app({}, ServeConfig(reports_dir=str(runs)))
    with TestClient(app) as c:
        listed = c.get("/api/reports").json()["reports"]
        assert [(r["name"], r["url"]) for r in listed] == [("bricks", "/reports/bricks/report.html")]
        assert "bricks report" in c.get("/reports/bricks/report.html").text
        for url in ("/reports/%2e%2e/secret.txt", "/reports/..%2Fsecret.txt", "/reports/bricks/%2e%2e/%2e%2e/secret.txt"):
            r = c.get(url)
            assert r.status_code == 404 and "not for the web" not in r.text, url
    with pytest.raises(ConfigError, match="not a folder"):
        ServeConfig(reports_dir=str(tmp_path / "missing"))


def test_serve_cli_refuses_bad_model_options(tmp_path):
    from click.testing import CliRunner

    from fovea.cli.serve import serve

    res = CliRunner().invoke(serve, ["--model", "no_equals_sign"])
    assert res.exit_code != 0 and "NAME=PATH" in str(res.exception)
    res = CliRunner().invoke(serve, ["--model", f"../up={tmp_path}"])
    assert res.exit_code != 0 and "not allowed" in str(res.exception)
    res = CliRunner().invoke(serve, ["--model", f"a={tmp_path}", "--model", f"a={tmp_path}"])
    assert res.exit_code != 0 and "same NAME" in res.output

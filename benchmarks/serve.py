"""`fovea serve` under load on loopback, against calling the predictor in-process; Ray batch 1 vs 2 workers.

Models: an EfficientNet-Lite0 classifier (offline ImageNet weights, 3 classes, 128 px) and a
PatchCore on the same backbone fitted on 8 generated textures (128 px, coreset 0.1), saved as
checkpoint folders. The server is the real `fovea serve` CLI in a subprocess (one torch thread,
micro-batching max 8 images / 5 ms); clients are threads here, each with its own HTTP connection,
sending one 128x128 PNG per request, sequentially, for a fixed number of requests.

Sections:
1. latency: p50/p99 and throughput at 1, 4 and 16 concurrent clients per model vs the in-process
   baseline (`predictor.predict_one` in a loop, one torch thread, same images). Every response
   is checked to carry its own request's id (no lost, duplicated or swapped responses) and a
   sample of scores is compared with the in-process answer.
2. capacity: a server with --max-queue 4 and 32 clients firing at once: how many 200 / 429, how
   fast the 429s come back, every request answered exactly once.
3. soak: 16 clients for --soak-s seconds (2 min full, 20 s quick); the server's RSS sampled every
   2 s, reported as start / end / max and a least-squares slope in MB per minute.
4. ray: `predict_batch(engine="ray")` on one folder with 1 and 2 workers (actor start-up included)
   vs `engine="local"`, all rows checked equal.
Everything is bounded by request counts and --soak-s; --quick shrinks them. The machine load is
printed: on a shared 2-core machine the absolute figures move with it, the ratios less.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, load_average, table  # noqa: E402

SIZE = 128


def build_models(root: Path) -> dict[str, Path]:
    """Checkpoint folders of the benchmark's classifier and PatchCore."""
    import torch

    from fovea.anomaly.models import build_model
    from fovea.anomaly.pipeline import AnomalyPipeline
    from fovea.anomaly.predictor import AnomalyPredictor
    from fovea.classify.model import ClassifierRecipe, build_classifier
    from fovea.classify.predictor import ClassifierPredictor

    torch.manual_seed(0)
    cls = build_classifier(ClassifierRecipe(class_names=["good", "damaged", "box"], input_size=(SIZE, SIZE)))
    ClassifierPredictor.from_pipeline(cls.eval()).save(root / "cls")
    pipe = AnomalyPipeline(build_model("patchcore", coreset_ratio=0.1), (SIZE, SIZE)).eval()
    with torch.no_grad():
        pipe.model.fit([torch.cat([pipe.preprocess(torch.from_numpy(t)[None]) for t in images(8, seed=100)])])
    AnomalyPredictor.from_pipeline(pipe).save(root / "pc")
    return {"classifier": root / "cls", "patchcore": root / "pc"}


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    xx = np.arange(SIZE)[None, :, None]
    return [(rng.integers(70, 180, (SIZE, SIZE, 3)) + 35 * np.sin(xx / 4.0 + i)).clip(0, 255).astype(np.uint8)
            for i in range(n)]


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1e3 if xs else float("nan")


# ------------------------------------------------------------------------------------ server process

class ServerProcess:
    """`fovea serve` in a subprocess on a free loopback port (one torch thread)."""

    def __init__(self, models: dict[str, Path], max_queue: int = 64):
        from fovea.serve.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "fovea.cli.main", "--threads", "1", "serve", "--port", str(self.port),
               "--max-queue", str(max_queue)] + [a for n, p in models.items() for a in ("--model", f"{n}={p}")]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> "ServerProcess":
        import httpx

        t_end = time.monotonic() + 300
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fovea serve exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/api/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("fovea serve did not get ready in 300 s")

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load_run(url: str, model: str, bodies: list[bytes], clients: int, per_client: int,
             stop_at: float | None = None) -> dict:
    """`clients` threads each send `per_client` requests (or until stop_at); every answer checked."""
    import httpx

    lat: list[float] = []
    codes: dict[int, int] = {}
    got_ids: list[str] = []
    sent_ids: list[str] = []
    scores: dict[int, float] = {}
    lost: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(timeout=120) as h:
            k = 0
            while (stop_at is None and k < per_client) or (stop_at is not None and time.monotonic() < stop_at):
                rid = f"c{c}-{k}"
                b = (c * 7919 + k) % len(bodies)
                t0 = time.perf_counter()
                with lock:
                    sent_ids.append(rid)
                try:
                    r = h.post(f"{url}/api/predict/{model}", files=[("file", (rid, bodies[b], "image/png"))])
                except httpx.HTTPError:
                    with lock:
                        lost.append(rid)
                    k += 1
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        lat.append(dt)
                        rec = r.json()["predictions"]
                        got_ids.extend(p["image"] for p in rec)
                        res = rec[0]["result"]
                        scores.setdefault(b, res.get("score", res.get("confidence")))
                k += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok_ids = sorted(got_ids)
    return {"lat": lat, "codes": codes, "wall": wall, "n": len(sent_ids), "scores": scores,
            "lost": len(lost) + (len(sent_ids) - len(lost) - sum(codes.values())),
            "dup": len(ok_ids) - len(set(ok_ids)),
            "foreign": len(set(got_ids) - set(sent_ids))}


# ------------------------------------------------------------------------------------ sections

def section_latency(run, models, bodies, imgs, counts, per_client_n):
    import fovea

    rows = []
    with ServerProcess(models) as srv:
        for name, path in models.items():
            pred = fovea.load_predictor(path)
            pred.predict_one(imgs[0])
            base = []
            for i in range(per_client_n):
                t0 = time.perf_counter()
                pred.predict_one(imgs[i % len(imgs)])
                base.append(time.perf_counter() - t0)
            base_tp = len(base) / sum(base)
            rows.append([name, "in-process", 1, len(base), f"{pct(base, 50):.1f}", f"{pct(base, 99):.1f}",
                         f"{base_tp:.1f}", "1.00", "-", "-"])
            ref = {}
            load_run(srv.url, name, bodies, 1, 2)   # warm-up
            for c in counts:
                n_each = max(2, per_client_n // c)
                res = load_run(srv.url, name, bodies, c, n_each)
                if res["codes"].get(200, 0) == 0:
                    raise RuntimeError(f"{name} at {c} clients: no request succeeded ({res['codes']})")
                tp = res["codes"].get(200, 0) / res["wall"]
                for b, s in res["scores"].items():
                    if b not in ref:
                        r = pred.predict_one(imgs[b])
                        ref[b] = getattr(r, "score", None) if hasattr(r, "score") else r.confidence
                err = max(abs(s - ref[b]) for b, s in res["scores"].items())
                rows.append([name, "server", c, res["n"], f"{pct(res['lat'], 50):.1f}", f"{pct(res['lat'], 99):.1f}",
                             f"{tp:.1f}", f"{tp / base_tp:.2f}",
                             f"{res['lost']} / {res['dup']} / {res['foreign']}", f"{err:.1e}"])
                print(rows[-1], flush=True)
    run.results["latency"] = table(
        ["model", "path", "clients", "requests", "p50 ms", "p99 ms", "images/s", "vs in-process",
         "lost / dup / foreign", "max |score - in-process|"], rows)


def section_capacity(run, models, bodies, clients: int):
    import httpx

    with ServerProcess({"classifier": models["classifier"]}, max_queue=4) as srv:
        url = srv.url + "/api/predict/classifier"
        barrier = threading.Barrier(clients)
        out: list[tuple[str, int, float, str | None]] = []
        lock = threading.Lock()

        def one(c: int) -> None:
            with httpx.Client(timeout=120) as h:
                h.get(srv.url + "/api/health")      # connect first: the burst times requests, not handshakes
                barrier.wait()
                t0 = time.perf_counter()
                r = h.post(url, files=[("file", (f"burst-{c}", bodies[c % len(bodies)], "image/png"))])
                dt = time.perf_counter() - t0
                echo = r.json()["predictions"][0]["image"] if r.status_code == 200 else None
                with lock:
                    out.append((f"burst-{c}", r.status_code, dt, echo if r.status_code == 200 else
                                r.headers.get("retry-after")))

        threads = [threading.Thread(target=one, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ok = [o for o in out if o[1] == 200]
    rej = [o for o in out if o[1] == 429]
    wrong = sum(1 for o in ok if o[3] != o[0])
    run.results["capacity"] = table(
        ["clients at once", "answered", "200", "429", "other", "429 p50 ms", "429 p99 ms", "200 p50 ms",
         "Retry-After present", "200 with a foreign id"],
        [[clients, len(out), len(ok), len(rej), len(out) - len(ok) - len(rej), f"{pct([o[2] for o in rej], 50):.1f}",
          f"{pct([o[2] for o in rej], 99):.1f}", f"{pct([o[2] for o in ok], 50):.1f}",
          f"{sum(1 for o in rej if o[3])}/{len(rej)}", wrong]])
    print(run.results["capacity"], flush=True)


def section_soak(run, models, bodies, soak_s: float, clients: int):
    samples: list[tuple[float, float]] = []
    with ServerProcess({"classifier": models["classifier"]}) as srv:
        load_run(srv.url, "classifier", bodies, clients, 3)     # warm-up: allocator pools, first batches
        stop_at = time.monotonic() + soak_s
        done = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not done.is_set():
                samples.append((time.monotonic() - t0, srv.rss_mb()))
                done.wait(2.0)

        th = threading.Thread(target=sample)
        th.start()
        res = load_run(srv.url, "classifier", bodies, clients, 0, stop_at=stop_at)
        done.set()
        th.join()
    t = np.array([s[0] for s in samples])
    m = np.array([s[1] for s in samples])
    slope = float(np.polyfit(t / 60.0, m, 1)[0]) if len(t) > 2 else float("nan")
    half = len(m) // 2
    run.results["soak"] = table(
        ["seconds", "clients", "requests", "200", "lost / dup / foreign", "p99 ms", "RSS start MB", "RSS end MB",
         "RSS max MB", "slope MB/min", "2nd-half slope MB/min"],
        [[f"{soak_s:.0f}", clients, res["n"], res["codes"].get(200, 0), f"{res['lost']} / {res['dup']} / {res['foreign']}",
          f"{pct(res['lat'], 99):.1f}", f"{m[0]:.0f}", f"{m[-1]:.0f}", f"{m.max():.0f}", f"{slope:.2f}",
          f"{float(np.polyfit(t[half:] / 60.0, m[half:], 1)[0]) if len(t) - half > 2 else float('nan'):.2f}"]])
    print(run.results["soak"], flush=True)


def section_ray(run, models, n_images: int):
    import ray

    from fovea.serve.batch import predict_batch

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        for i, im in enumerate(images(n_images, seed=7)):
            (folder / f"{i:05d}.png").write_bytes(png(im))
        rows, outs = [], {}
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t0
        for engine, workers in (("local", 1), ("ray", 1), ("ray", 2)):
            out = Path(d) / f"{engine}{workers}"
            r = predict_batch(models["classifier"], [folder], out, engine=engine, num_workers=workers, batch_size=8)
            outs[(engine, workers)] = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
            rows.append([engine, workers, r.n_rows, f"{r.seconds:.1f}", f"{r.first_row_s:.1f}",
                         f"{r.n_rows / r.seconds:.1f}"])
            print(rows[-1], flush=True)
        ray.shutdown()
    local = outs[("local", 1)]
    for k, v in outs.items():
        same_order = [x["image"] for x in v] == [x["image"] for x in local]
        diff = max(max(abs(a - b) for a, b in zip(x["result"]["probs"], y["result"]["probs"])) for x, y in zip(v, local))
        rows[[("local", 1), ("ray", 1), ("ray", 2)].index(k)] += [same_order, f"{diff:.1e}"]
    t1, t2 = float(rows[1][3]), float(rows[2][3])
    run.results["ray"] = [f"Ray start (ray.init, 2 CPUs): {t_init:.1f} s, not in the times below. 2 workers vs 1: "
                          f"{t1 / t2:.2f}x the speed end to end (worker start-up and model loading included; "
                          "'first row s' is when the first ordered row reached the file, mostly start-up). "
                          f"Cores: {os.cpu_count()}; 2 workers can only gain when 2 cores are free.", ""] + table(
        ["engine", "workers", "rows", "seconds", "first row s", "images/s", "same order as local",
         "max |prob - local|"], rows)
    print(run.results["ray"], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_doc_args(ap, "serve", "48 requests per level, soak 20 s, 32 images for Ray (about 5 min)")
    ap.add_argument("--requests", type=int, default=192, help="requests per concurrency level and model")
    ap.add_argument("--soak-s", type=float, default=120.0)
    ap.add_argument("--ray-images", type=int, default=256)
    ap.add_argument("--sections", default="latency,capacity,soak,ray")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.soak_s, args.ray_images = 48, 20.0, 32
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/serve.py")
    run.results = {}
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory() as d:
        models = build_models(Path(d))
        imgs = images(16)
        bodies = [png(im) for im in imgs]
        if "latency" in sections:
            section_latency(run, models, bodies, imgs, (1, 4, 16), args.requests)
        if "capacity" in sections:
            section_capacity(run, models, bodies, 32)
        if "soak" in sections:
            section_soak(run, models, bodies, args.soak_s, 16)
        if "ray" in sections:
            section_ray(run, models, args.ray_images)
    body = []
    titles = {"latency": "Latency and throughput (loopback, one torch thread in the server and in-process)",
              "capacity": "Past capacity (--max-queue 4, 32 requests at once)",
              "soak": "Soak: server RSS under 16 clients", "ray": "Ray batch inference (same folder)"}
    for k in ("latency", "capacity", "soak", "ray"):
        if k in run.results:
            body += [f"### {titles[k]}", ""] + run.results[k] + [""]
    body.append(f"Load average at the end: {load_average():.1f}.")
    run.write("fovea serve under load", body)


if __name__ == "__main__":
    main()

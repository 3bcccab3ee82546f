"""A bottleneck atlas served live: its page and files, and an API that decodes any point
of the latent space through the run's model (what `python -m analysis.serve` runs).

    GET /api/health                         {"live": true, "samples": N, "components": [...]}
    GET /api/decode?sample=I&skips=S&pc=C:T,C:T,...
        the latent of atlas sample I plus T sqrt(eigenvalue) along each walked component C
        (any number at once), decoded with the skip features of S: "own" (sample I's),
        "reference" (the atlas' reference sample, nearest the mean), "none" (skips off) or
        another sample's number J (the latent swap: I's latent with J's skips)
        -> {"keypoints": [[x, y], ...] crop pixels (argmax), "peaks": [...], "png": data: URI
            of the fused heatmaps}

A malformed request gets a 400 (404 for an unknown path) with {"error": message}, a fault
while decoding a 500 with its message, and the server goes on. One decode at a time (a lock): the model's compiled functions are shared.
"""

from __future__ import annotations

import collections
import functools
import http.server
import json
import math
import pathlib
import threading
import urllib.parse

import numpy as np

from analysis import decoding
from analysis.atlas import RUN_FILE, heatmap_png
from shg_jax import data
from shg_jax.errors import UserError
from shg_jax.latents import Latents
from shg_jax.models import latent_layer
from shg_jax.runs import open_run

#: Slider positions beyond this many sqrt(eigenvalue) are refused.
MAX_STEP = 10.0
#: Skip features kept in memory (per sample).
SKIPS_CACHED = 64


class RequestError(ValueError):
    """A malformed API request: answered 400 with its message."""


class LiveDecoder:
    """The run, latents and walked axes behind one atlas folder (written by analysis.atlas),
    decoding on request."""

    def __init__(self, atlas_dir, data_dir=None):
        self.dir = pathlib.Path(atlas_dir)
        if not (self.dir / RUN_FILE).is_file():
            raise UserError(f"{self.dir}: no atlas here ({RUN_FILE} missing); write one with "
                            f"python -m analysis.latent --ckpt RUN --out OUT --atlas and "
                            f"serve OUT/atlas/SUBSET")
        self.run = json.loads((self.dir / RUN_FILE).read_text())
        needed = [self.dir / "rows.npy", self.dir / "walk.npz",
                  pathlib.Path(self.run["latents"]) / "meta.json"]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise UserError(f"{self.dir}: the atlas needs {', '.join(missing)}, which is "
                            f"gone; write the atlas again with analysis.latent --atlas")
        config, self.steps, self.state, record = open_run(
            self.run["workdir"], self.run["checkpoint"], data_dir or self.run["data_dir"])
        if record.global_step != self.run["step"]:
            raise UserError(f"{self.dir} was made from step {self.run['step']} of "
                            f"{self.run['workdir']}, whose {self.run['label']} checkpoint is "
                            f"now step {record.global_step}; write the atlas again")
        self.layer = latent_layer(self.run["layer"])
        self.split = data.Split(config.data_dir, self.run["split"])
        self.rows = np.load(self.dir / "rows.npy")
        walk = np.load(self.dir / "walk.npz")
        self.mean, self.axes, self.scales = walk["mean"], walk["axes"], walk["scales"]
        self.components = [int(c) for c in walk["components"]]
        self.reference = int(walk["reference"])
        # Extraction writes every row of the split in order: split row r is latents row r.
        self.latents = np.asarray(Latents.load(self.run["latents"]).latents[self.rows],
                                  np.float32)
        self.model = decoding.model_decoding(self.steps, self.layer)
        self.lock = threading.Lock()
        self._skips = collections.OrderedDict()

    def skips(self, sample: int):
        """The skip features of atlas sample `sample` (cached)."""
        if sample not in self._skips:
            crop = self.split.gather(self.rows[[sample]], ("images",))["images"]
            self._skips[sample] = self.model.encode(self.state, crop)[1]
            while len(self._skips) > SKIPS_CACHED:
                self._skips.popitem(last=False)
        self._skips.move_to_end(sample)
        return self._skips[sample]

    def latent(self, sample: int, steps: dict[int, float]) -> np.ndarray:
        """Sample `sample`'s latent moved `t` sqrt(eigenvalue) along each component c of
        `steps` {c: t} -> (D,)."""
        z = self.latents[sample].copy()
        for c, t in steps.items():
            i = self.components.index(c)
            z += np.float32(t) * self.scales[i] * self.axes[i]
        return z

    def decode(self, sample: int, skips: str, steps: dict[int, float]) -> dict:
        """The answer of /api/decode (module docstring); arguments already checked."""
        source = {"own": sample, "none": sample, "reference": self.reference}.get(skips)
        source = int(skips) if source is None else source
        with self.lock:
            heatmaps = np.asarray(self.model.decode(
                self.state, self.latent(sample, steps)[None], self.skips(source),
                skips != "none"))
            xy, peak = self.steps.codec.decode(heatmaps)
        return {"keypoints": np.round(np.asarray(xy[0]), 2).tolist(),
                "peaks": np.round(np.asarray(peak[0]), 4).tolist(),
                "png": heatmap_png(heatmaps[0])}

    def parse(self, query: dict) -> tuple[int, str, dict[int, float]]:
        """/api/decode's query -> (sample, skips, {component: steps}); RequestError names
        what is wrong."""
        n = len(self.rows)
        try:
            sample = int(query.get("sample", [""])[0])
        except ValueError:
            raise RequestError(f"sample must be an integer 0..{n - 1}") from None
        if not 0 <= sample < n:
            raise RequestError(f"sample {sample} is not in 0..{n - 1}")
        skips = query.get("skips", ["own"])[0]
        if skips not in ("own", "reference", "none") and not (
                skips.isdigit() and int(skips) < n):
            raise RequestError(f"skips must be own, reference, none or a sample 0..{n - 1}, "
                               f"got {skips!r}")
        steps = {}
        for item in filter(None, query.get("pc", [""])[0].split(",")):
            try:
                c, t = item.split(":")
                c, t = int(c), float(t)
            except ValueError:
                raise RequestError(f"pc takes COMPONENT:STEPS pairs, got {item!r}") from None
            if c not in self.components:
                raise RequestError(f"component {c} was not walked; the atlas has "
                                   f"{', '.join(map(str, self.components))}")
            if not math.isfinite(t) or abs(t) > MAX_STEP:
                raise RequestError(f"pc {c}: steps must lie within +-{MAX_STEP:g}, got {t}")
            steps[c] = steps.get(c, 0.0) + t
        return sample, skips, steps


class AtlasHandler(http.server.SimpleHTTPRequestHandler):
    """The atlas folder's files, and /api/ answered by `decoder` (set by `make_server`)."""
    decoder: LiveDecoder

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if not url.path.startswith("/api/"):
            return super().do_GET()
        try:
            if url.path == "/api/health":
                answer = {"live": True, "samples": len(self.decoder.rows),
                          "components": self.decoder.components}
            elif url.path == "/api/decode":
                answer = self.decoder.decode(*self.decoder.parse(
                    urllib.parse.parse_qs(url.query)))
            else:
                return self._json(404, {"error": f"no such API: {url.path}; there are "
                                                 f"/api/health and /api/decode"})
        except RequestError as e:
            return self._json(400, {"error": str(e)})
        except Exception as e:                  # a fault of ours: said, and the server goes on
            self.log_error("%s while answering %s: %s", type(e).__name__, self.path, e)
            return self._json(500, {"error": f"internal error: {type(e).__name__}: {e}"})
        self._json(200, answer)

    def _json(self, status: int, obj) -> None:
        body = json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass                     # the page moved on (a newer slider request aborted it)

    def log_message(self, format, *args):      # quiet: one line per error only
        if args and str(args[1]).startswith(("4", "5")):
            super().log_message(format, *args)


def make_server(decoder: LiveDecoder, host: str = "127.0.0.1",
                port: int = 8765) -> http.server.ThreadingHTTPServer:
    """An HTTP server of the atlas folder with `decoder` behind /api/ (port 0: any free
    port; server.server_address says which)."""
    handler = functools.partial(type("Handler", (AtlasHandler,), {"decoder": decoder}),
                                directory=str(decoder.dir))
    return http.server.ThreadingHTTPServer((host, port), handler)

"""Time the atlas server's answers to slider requests, over HTTP on this machine.

    python -m benchmarks.atlas_server OUT/atlas/SUBSET [--requests 200]

Serves the atlas (analysis.atlas_server on 127.0.0.1, any free port) and sends requests as
the page does: slider moves on a selected sample (its skip features cached after its first
request: every slider position is a new latent, decoded), and first requests for new
samples (their crop encoded too). Prints the median, 95th percentile and worst time of each,
in milliseconds, wall clock from request to parsed JSON.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np

from analysis.atlas_server import LiveDecoder, make_server
from shg_jax import cli


def timed_get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        json.loads(r.read())
    return (time.perf_counter() - start) * 1000


def report(name: str, ms: list[float]) -> None:
    print(f"atlas server {name}: requests={len(ms)} median_ms={np.median(ms):.1f} "
          f"p95_ms={np.percentile(ms, 95):.1f} max_ms={max(ms):.1f}", flush=True)


@cli.command
def main(argv=None) -> None:
    p = cli.parser("python -m benchmarks.atlas_server", __doc__,
                   "python -m benchmarks.atlas_server reports/latent/atlas/all")
    p.add_argument("atlas", help="an atlas folder (analysis.latent --atlas)")
    p.add_argument("--requests", type=cli.whole_number(10), default=200)
    args = p.parse_args(argv)
    decoder = LiveDecoder(args.atlas)
    server = make_server(decoder, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/api/decode"
    rng = np.random.default_rng(0)
    comps = decoder.components
    n = len(decoder.rows)
    timed_get(f"{base}?sample={decoder.reference}")                 # compiled, warm
    moves = []
    for _ in range(args.requests):
        pcs = ",".join(f"{c}:{rng.uniform(-3, 3):.2f}" for c in comps[:3])
        moves.append(timed_get(f"{base}?sample={decoder.reference}&skips=own&pc={pcs}"))
    report("slider move (several components, cached skips)", moves)
    fresh = [timed_get(f"{base}?sample={s}&skips=own&pc={comps[0]}:1")
             for s in rng.choice(n, min(args.requests // 4, n), replace=False)]
    report("first request of a new sample (its crop encoded)", fresh)
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()

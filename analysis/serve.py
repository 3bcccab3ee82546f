"""Serve a bottleneck atlas live: its page, with the walk sliders decoded through the run's
model as they move (several components at once, from any selected sample's latent, with
its own, the reference sample's or no skip features).

    python -m analysis.serve OUT/atlas/SUBSET [--host 127.0.0.1] [--port 8765]

OUT/atlas/SUBSET is what `python -m analysis.latent ... --atlas` wrote. The server binds to
127.0.0.1 (this machine only) unless --host says otherwise; Ctrl-C stops it.
"""

from __future__ import annotations

import sys

from analysis.atlas_server import LiveDecoder, make_server
from shg_jax import cli


def parse_args(argv=None):
    p = cli.parser("python -m analysis.serve", __doc__,
                   "python -m analysis.serve reports/latent/atlas/full-annotated")
    p.add_argument("atlas", help="an atlas folder: OUT/atlas/SUBSET of analysis.latent --atlas")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (0.0.0.0 lets other machines in)")
    p.add_argument("--port", type=cli.whole_number(0), default=8765,
                   help="port (0: any free one)")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                   help="the prepared data, if it moved since the atlas was written")
    return p.parse_args(argv)


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    decoder = LiveDecoder(args.atlas, args.data_dir)
    decoder.decode(decoder.reference, "own", {})            # compile before the first visitor
    try:
        server = make_server(decoder, args.host, args.port)
    except OSError as e:
        raise cli.ArgumentError(f"--host {args.host} --port {args.port}: cannot listen there "
                                f"({e.strerror}); pick another port") from None
    host, port = server.server_address[:2]
    print(f"serving {decoder.dir} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

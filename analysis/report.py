"""The output folder of an analysis: figures (PNG) with the numbers behind them (JSON/CSV),
all written atomically, and an index.html that links every file."""

from __future__ import annotations

import csv
import html
import io
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shg_jax import fileio  # noqa: E402


def _cell(value) -> str:
    """A table cell: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Report:
    def __init__(self, out_dir, title: str):
        self.dir = pathlib.Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.sections: list[tuple[str, list]] = []

    def section(self, heading: str) -> None:
        self.sections.append((heading, []))

    def _add(self, kind: str, name: str, caption: str, extra=None) -> None:
        if not self.sections:
            self.section("")
        self.sections[-1][1].append((kind, name, caption, extra))

    def figure(self, fig, name: str, caption: str) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fileio.write_bytes(self.dir / name, buf.getvalue())
        self._add("figure", name, caption)
        return name

    def json(self, obj, name: str, caption: str, summary: dict | None = None) -> str:
        fileio.write_json(self.dir / name, obj)
        self._add("data", name, caption, summary)
        return name

    def markdown(self, text: str, name: str, caption: str) -> str:
        fileio.write_bytes(self.dir / name, text.encode())
        self._add("data", name, caption)
        return name

    def csv(self, header: list, rows: list, name: str, caption: str) -> str:
        self._write_csv(header, rows, name)
        self._add("data", name, caption)
        return name

    def link(self, name: str, caption: str) -> str:
        """A file written by someone else (a page of its own) that the index links."""
        self._add("data", name, caption)
        return name

    def table(self, header: list, rows: list, name: str, caption: str) -> str:
        """A CSV that the index also shows as a table (short tables: claims, scores)."""
        self._write_csv(header, rows, name)
        self._add("table", name, caption, (header, rows))
        return name

    def _write_csv(self, header: list, rows: list, name: str) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows(rows)
        fileio.write_bytes(self.dir / name, buf.getvalue().encode())

    def write_index(self) -> pathlib.Path:
        esc = html.escape
        parts = [f"<!doctype html><meta charset='utf-8'><title>{esc(self.title)}</title>",
                 "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
                 "img{max-width:100%;border:1px solid #ccc}td,th{padding:2px 8px}</style>",
                 f"<h1>{esc(self.title)}</h1>"]
        for heading, items in self.sections:
            if heading:
                parts.append(f"<h2>{esc(heading)}</h2>")
            for kind, name, caption, extra in items:
                if kind == "figure":
                    parts.append(f"<figure><a href='{esc(name)}'><img src='{esc(name)}'></a>"
                                 f"<figcaption>{esc(caption)}</figcaption></figure>")
                elif kind == "table":
                    header, rows = extra
                    cells = ["<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header)
                             + "</tr>"]
                    cells += ["<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in row)
                              + "</tr>" for row in rows]
                    parts.append(f"<p><a href='{esc(name)}'>{esc(name)}</a>: {esc(caption)}"
                                 f"</p><table border='1' style='border-collapse:collapse'>"
                                 f"{''.join(cells)}</table>")
                else:
                    parts.append(f"<p><a href='{esc(name)}'>{esc(name)}</a>: {esc(caption)}"
                                 "</p>")
                    if extra:
                        rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                                       for k, v in extra.items())
                        parts.append(f"<table>{rows}</table>")
        path = self.dir / "index.html"
        fileio.write_bytes(path, "\n".join(parts).encode())
        return path

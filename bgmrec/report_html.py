"""The recommendations report as one self-contained HTML page: what it shows (gathered by bgmrec.report) and how.

Everything is inline: CSS, frames as data: JPEGs, previews as data: MP3s in <audio> players, and the Recall@K
curves as SVG drawn here (a few lines and dots: no plotting library, no script, nothing fetched).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

from bgmrec.metrics import FULL_KS, IPS_KS

CHART_WIDTH, CHART_HEIGHT = 440, 220
# the legend sits in the right margin, beside the plot
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 96, 28, 36
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

DIVERSITY_LABELS = {
    "coverage": "catalog coverage: share of the catalog listed at least once",
    "gini": "Gini of exposure (0 = every music listed equally, 1 = one music takes all)",
    "entropy": "entropy of exposure, normalised by log(catalog size)",
    "intra_list_diversity": "intra-list diversity: 1 - mean pairwise cosine of a list's music",
    "new_share": "share of list slots given to new music",
    "mean_popularity": "mean popularity (videos per music) of the listed music",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; } h3 { font-size: 1rem; margin: 0 0 .5rem; }
table { border-collapse: collapse; } td, th { padding: .15rem .5rem; text-align: left; vertical-align: middle; }
th { border-bottom: 1px solid #999; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; } .video { border: 1px solid #ccc; border-radius: 6px;
  padding: .8rem; margin: 1rem 0; } .frames img { height: 96px; margin-right: 4px; border-radius: 3px; }
.note { color: #777; font-size: .85rem; } tr.chosen { background: #fff3c4; } audio { height: 28px; width: 14rem; }
.meta { color: #555; }
"""


@dataclass(frozen=True)
class ListedMusic:
    """One music of a list: its rank in the catalog, cosine score, preview (MP3 bytes) or why there is none."""

    rank: int
    music_id: str
    title: str
    score: float
    is_true: bool
    preview: bytes | None
    preview_note: str = ""


@dataclass(frozen=True)
class VideoShowcase:
    """One test video: its frames (JPEG bytes) or why there are none, its description, its list and the music
    its creator chose."""

    video_id: str
    description: str | None
    frames: list[bytes]
    frames_note: str
    items: list[ListedMusic]
    chosen: ListedMusic


@dataclass(frozen=True)
class ReportContent:
    """Everything the page shows."""

    model: str
    source: str
    dataset: str
    split_kind: str
    catalog_size: int
    k: int
    videos: list[VideoShowcase]
    recall: dict[str, dict[str, dict[str, float]]]
    diversity: dict[str, float]
    diversity_videos: int
    notes: list[str] = field(default_factory=list)


def _data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def recall_chart_svg(title: str, ks: list[int], series: dict[str, list[float]]) -> str:
    """A line chart of Recall@K (y from 0 to 1) against K, one line per series; NaN values are left out."""
    plot_w = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    span = (max(ks) - min(ks)) or 1

    def x(k: float) -> float:
        return MARGIN_LEFT + (k - min(ks)) / span * plot_w if len(ks) > 1 else MARGIN_LEFT + plot_w / 2

    def y(value: float) -> float:
        return MARGIN_TOP + (1 - value) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
             f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" aria-label="{escape(title)}">',
             f'<text x="{MARGIN_LEFT + plot_w / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="#ddd"/><text x="{MARGIN_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{tick:g}</text>')
    for k in ks:
        parts.append(f'<text x="{x(k):.1f}" y="{MARGIN_TOP + plot_h + 16}" text-anchor="middle" '
                     f'font-size="11">{k}</text>')
    parts.append(f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{CHART_HEIGHT - 4}" text-anchor="middle" '
                 f'font-size="11">K</text>')
    for i, (label, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [(x(k), y(v), k, v) for k, v in zip(ks, values, strict=True) if v == v]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for px, py, k, v in points:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}">'
                         f'<title>{escape(label)} @{k}: {v:.4f}</title></circle>')
        legend_y = MARGIN_TOP + 14 * i + 10
        parts.append(f'<rect x="{MARGIN_LEFT + plot_w + 12}" y="{legend_y - 8}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{MARGIN_LEFT + plot_w + 26}" y="{legend_y + 1}" '
                     f'font-size="11">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _recall_section(content: ReportContent) -> str:
    if not content.recall:
        return '<h2>Recall@K</h2><p class="note">no metrics given (bgmrec report --metrics MODEL=FILE)</p>'
    out = ['<h2>Recall@K</h2><p class="meta">Full gallery: the chosen music among every music of the evaluated '
           "set (VMCML eq. 7). IPS: among 1 chosen + sampled negatives, each video weighted by the inverse "
           "popularity of its music (CMVAE eqs. 14-15). Weak split: test music seen in training; strong: "
           "unseen music.</p>"]
    for model, by_split in content.recall.items():
        full = {kind: [values.get(f"recall@{k}", float("nan")) for k in FULL_KS] for kind, values in by_split.items()}
        ips = {kind: [values.get(f"ips_recall@{k}", float("nan")) for k in IPS_KS] for kind, values in by_split.items()}
        out.append(f'<h3>{escape(model)}</h3><div class="charts">'
                   f"{recall_chart_svg(f'{model}: Recall@K, full gallery', list(FULL_KS), full)}"
                   f"{recall_chart_svg(f'{model}: IPS Recall@K', list(IPS_KS), ips)}</div>")
        header = "".join(f"<th>R@{k}</th>" for k in FULL_KS) + "".join(f"<th>IPS R@{k}</th>" for k in IPS_KS)
        rows = "".join(
            f"<tr><td>{escape(kind)}</td>"
            + "".join(f'<td class="num">{v:.3f}</td>' for v in [*full[kind], *ips[kind]]) + "</tr>"
            for kind in by_split)
        out.append(f"<table><tr><th>split</th>{header}</tr>{rows}</table>")
    return "".join(out)


def _diversity_section(content: ReportContent) -> str:
    rows = "".join(f'<tr><td>{escape(DIVERSITY_LABELS.get(name, name))}</td><td class="num">{value:.3f}</td></tr>'
                   for name, value in content.diversity.items())
    return (f"<h2>Diversity of the top-{content.k} lists</h2><p class=\"meta\">Over the lists of "
            f"{content.diversity_videos} test videos of the {escape(content.split_kind)} split, in a catalog of "
            f"{content.catalog_size} music.</p><table>{rows}</table>")


def _player(item: ListedMusic) -> str:
    if item.preview is None:
        return f'<span class="note">no preview: {escape(item.preview_note)}</span>'
    return (f'<audio controls preload="none" title="{escape(item.title)}" '
            f'src="{_data_uri("audio/mpeg", item.preview)}"></audio>')


def _video_card(video: VideoShowcase, content: ReportContent) -> str:
    frames = ("".join(f'<img alt="frame {i + 1} of {escape(video.video_id)}" src="{_data_uri("image/jpeg", f)}">'
                      for i, f in enumerate(video.frames))
              or f'<span class="note">no frames: {escape(video.frames_note)}</span>')
    description = (escape(video.description) if video.description is not None
                   else '<span class="note">no description</span>')
    chosen = video.chosen
    listed = any(item.is_true for item in video.items)
    chosen_line = (f"<p>Chosen by its creator: <b>{escape(chosen.title)}</b> ({escape(chosen.music_id)}), rank "
                   f"<b>{chosen.rank}</b> of {content.catalog_size}"
                   + ("" if listed else f", score {chosen.score:.3f} {_player(chosen)}") + "</p>")
    rows = "".join(
        f'<tr class="{"chosen" if item.is_true else ""}"><td class="num">{item.rank}</td>'
        f"<td>{escape(item.title)}{' ★ chosen' if item.is_true else ''}</td><td>{escape(item.music_id)}</td>"
        f'<td class="num">{item.score:.3f}</td><td>{_player(item)}</td></tr>'
        for item in video.items)
    return (f'<section class="video"><h3>video {escape(video.video_id)}</h3><div class="frames">{frames}</div>'
            f"<p>{description}</p>{chosen_line}<table><tr><th>#</th><th>title</th><th>music id</th>"
            f"<th>score</th><th>preview</th></tr>{rows}</table></section>")


def render_report(content: ReportContent) -> str:
    """The whole report page."""
    videos = "".join(_video_card(video, content) for video in content.videos)
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in content.notes)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>bgmrec: recommendations of {escape(content.model)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Recommendations of {escape(content.model)}</h1>"
        f'<p class="meta">{escape(content.source)}; dataset {escape(content.dataset)}; '
        f"{len(content.videos)} test videos of the {escape(content.split_kind)} split, top {content.k} of "
        f"{content.catalog_size} music by cosine score.</p>{notes}"
        f"<h2>Test videos</h2>{videos}{_recall_section(content)}{_diversity_section(content)}</body></html>\n"
    )

"""The papers' result tables as data: which models, which protocol, which data set, and the published numbers.

CMVAE (Yi et al., IEEE TMM 2021) Tables 2-5 report popularity-debiased (IPS) Recall@{10,15,20,25} on TT-150k for
existing music (weak generalisation) and new music (strong generalisation). VMCML (Lee et al., 2023) Tables 2, 5
and 6 report full-gallery Recall@{1,5,10,20} on MSVD for seen music (prototypes) and unseen music (music encoder).
Each table lists the claims its paper draws from it ("A beats B"), checked by `bgmrec reproduce` at K = 10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CMVAE_KS = (10, 15, 20, 25)
VMCML_KS = (1, 5, 10, 20)
CLAIM_K = 10


@dataclass(frozen=True)
class PaperTable:
    """One table of a paper: rows are our model names, columns the paper's splits; numbers as printed."""

    title: str
    preset: str  # simulator preset the table is reproduced on (bgmrec.data.presets)
    splits: tuple[str, ...]  # our split kinds, in the paper's column order
    columns: tuple[str, ...]  # the paper's name of each column group (one per split or part)
    metric: str  # "ips_recall" (CMVAE) or "recall" (VMCML)
    ks: tuple[int, ...]
    paper: dict[str, dict[str, tuple[float, ...]]]  # our row name -> paper column -> Recall@ks
    labels: dict[str, str]  # our row name -> the paper's row name
    claims: tuple[tuple[str, str], ...]  # (better, worse) pairs the paper states
    paper_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # row -> the paper's own optimiser


_CMVAE_COLUMNS = ("existing music (weak)", "new music (strong)")
_VMCML_COLUMNS = ("seen music", "unseen music")


def _cmvae(title: str, rows: dict[str, tuple[str, tuple[float, ...], tuple[float, ...] | None]],
           claims: tuple[tuple[str, str], ...], **extra: Any) -> PaperTable:
    paper = {name: {_CMVAE_COLUMNS[0]: weak, **({_CMVAE_COLUMNS[1]: strong} if strong else {})}
             for name, (_, weak, strong) in rows.items()}
    return PaperTable(title, "tt150k", ("weak", "strong"), _CMVAE_COLUMNS, "ips_recall", CMVAE_KS, paper,
                      {name: label for name, (label, _, _) in rows.items()}, claims, **extra)


def _vmcml(title: str, rows: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]],
           claims: tuple[tuple[str, str], ...], **extra: Any) -> PaperTable:
    paper = {name: {_VMCML_COLUMNS[0]: seen, _VMCML_COLUMNS[1]: unseen} for name, (_, seen, unseen) in rows.items()}
    return PaperTable(title, "msvd", ("seen-unseen",), _VMCML_COLUMNS, "recall", VMCML_KS, paper,
                      {name: label for name, (label, _, _) in rows.items()}, claims, **extra)


_CMVAE = (0.2606, 0.3684, 0.4489, 0.5137), (0.1610, 0.2274, 0.2881, 0.3479)
_VMCML = (0.2056, 0.3562, 0.4409, 0.5450), (0.0170, 0.0678, 0.1329, 0.2526)

TABLES: dict[str, PaperTable] = {
    "cmvae-2": _cmvae(
        "CMVAE Table 2: CMVAE against the baselines",
        {
            "cmvae": ("CMVAE", *_CMVAE),
            "random": ("Random", (0.0959, 0.1398, 0.1788, 0.2191), (0.0978, 0.1443, 0.1866, 0.2268)),
            "popular": ("PopularRank", (0.0689, 0.1030, 0.1390, 0.1766), None),
            "cca": ("CCA", (0.0465, 0.0640, 0.0934, 0.1278), (0.0412, 0.0670, 0.0941, 0.1273)),
            "cevar": ("CEVAR", (0.1262, 0.1749, 0.2302, 0.2794), (0.1223, 0.1823, 0.2416, 0.3019)),
            "cbvmr": ("CMVBR", (0.0927, 0.1431, 0.1929, 0.2425), (0.0966, 0.1441, 0.1940, 0.2395)),
            "dscmr": ("DSCMR", (0.1062, 0.1553, 0.2077, 0.2651), (0.1133, 0.1775, 0.2241, 0.2793)),
            "uwml": ("UWML", (0.1053, 0.1554, 0.2103, 0.2573), (0.0933, 0.1299, 0.1729, 0.2255)),
            "dual-vae": ("Dual-VAE", (0.1607, 0.2272, 0.2897, 0.3514), (0.1450, 0.2143, 0.2705, 0.3294)),
            "da-vae": ("DA-VAE", (0.1645, 0.2390, 0.3063, 0.3698), (0.1417, 0.2104, 0.2740, 0.3280)),
            "cross-vae": ("Cross-VAE", (0.2584, 0.3590, 0.4360, 0.5077), (0.1391, 0.2008, 0.2706, 0.3233)),
        },
        tuple(("cmvae", other) for other in
              ("random", "popular", "cca", "cevar", "cbvmr", "dscmr", "uwml", "dual-vae", "da-vae", "cross-vae")),
        # §5.2: "we set the weight of the reconstruction loss β to 1e5 and the learning rate to 0.05 and 0.0001"
        # for strong and weak generalisation respectively.
        paper_settings={"cmvae": {"weak": {"lr": 1e-4, "beta": 1e5}, "strong": {"lr": 0.05, "beta": 1e5}}},
    ),
    "cmvae-3": _cmvae(
        "CMVAE Table 3: generation strategies",
        {
            "cmvae-gen-none": ("CMVAE w/o", (0.1305, 0.1979, 0.2583, 0.3173), (0.1163, 0.1767, 0.2287, 0.2935)),
            "cmvae-gen-dual": ("CMVAE Dual", (0.1637, 0.2302, 0.2937, 0.3544), (0.1470, 0.2183, 0.2730, 0.3314)),
            "cmvae": ("CMVAE Cross", *_CMVAE),
        },
        (("cmvae", "cmvae-gen-dual"), ("cmvae-gen-dual", "cmvae-gen-none")),
    ),
    "cmvae-4": _cmvae(
        "CMVAE Table 4: multimodal variational fusion",
        {
            "cmvae-fusion-concat": ("CMVAE JMVAE", (0.1990, 0.2929, 0.3673, 0.4453),
                                    (0.1408, 0.2008, 0.2633, 0.3325)),
            "cmvae-fusion-moe": ("CMVAE MoE", (0.2144, 0.3058, 0.3856, 0.4498), (0.1238, 0.1879, 0.2614, 0.3249)),
            "cmvae": ("CMVAE PoE", *_CMVAE),
        },
        (("cmvae", "cmvae-fusion-moe"), ("cmvae", "cmvae-fusion-concat")),
    ),
    "cmvae-5": _cmvae(
        "CMVAE Table 5: descriptions missing at test time",
        {
            "cmvae@notext": ("V", (0.2479, 0.3472, 0.4281, 0.4977), (0.1573, 0.2275, 0.2849, 0.3459)),
            "cmvae": ("V + T", *_CMVAE),
        },
        (("cmvae", "cmvae@notext"),),
    ),
    "vmcml-2": _vmcml(
        "VMCML Table 2: VMCML against the baselines on MSVD",
        {
            "vmcml": ("VMCML CosFace", *_VMCML),
            "vmcml-arcface": ("VMCML ArcFace", (0.1685, 0.2772, 0.3370, 0.4203), (0.0145, 0.0673, 0.1298, 0.2455)),
            "random": ("Random", (0.0037, 0.0188, 0.0377, 0.0754), (0.0080, 0.0400, 0.0800, 0.1600)),
            "cevar": ("CEVAR", (0.1883, 0.3319, 0.4188, 0.5300), (0.0156, 0.0613, 0.1153, 0.2170)),
            "cmvae": ("CMVAE", (0.0277, 0.0817, 0.1316, 0.2040), (0.0112, 0.0474, 0.0906, 0.1740)),
        },
        (("vmcml", "vmcml-arcface"), ("vmcml", "cevar"), ("vmcml", "cmvae"), ("vmcml", "random")),
        # §4.2 trains VMCML with learning rate 1e-5.
        paper_settings={"vmcml": {"seen-unseen": {"lr": 1e-5}}},
    ),
    "vmcml-5": _vmcml(
        "VMCML Table 5: music low-level features",
        {
            "vmcml": ("w/ llf", *_VMCML),
            "vmcml-nolld": ("w/o llf", (0.1776, 0.3109, 0.3939, 0.5042), (0.0147, 0.0381, 0.1079, 0.2087)),
        },
        (("vmcml", "vmcml-nolld"),),
    ),
    "vmcml-6": _vmcml(
        "VMCML Table 6: the similarity loss",
        {
            "vmcml": ("w/ L_SL", *_VMCML),
            "vmcml-nosl": ("w/o L_SL", (0.1958, 0.3206, 0.3935, 0.4840), (0.0123, 0.0596, 0.1166, 0.2186)),
        },
        (("vmcml", "vmcml-nosl"),),
    ),
}

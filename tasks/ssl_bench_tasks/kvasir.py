"""Kvasir-SEG colonoscopy polyps (Jha et al., 2020): a folder task with its owners' metadata.

The owners ship ``Kvasir-SEG/images/<id>.jpg`` and ``Kvasir-SEG/masks/<id>.jpg`` (1000 images, 332x487 to
1920x1072; some copies unpack to a doubled ``Kvasir-SEG/Kvasir-SEG/``). The masks are JPEGs, sometimes
3-channel, with compression noise around the edges: a pixel's value is its largest channel, kept where it is
> 127. There is no official split: the seeded split of :func:`ssl_bench_tasks._files.seeded_split` (800 / 200).
"""

from __future__ import annotations

from collections.abc import Callable

from ssl_bench.api import hookimpl
from ssl_bench_tasks._folder import FolderSpec, FolderTask

KVASIR_SEG = FolderSpec(
    name="kvasir-polyp",
    folders=("Kvasir-SEG", "Kvasir-SEG/Kvasir-SEG"),
    modality="endoscopy",
    channels=3,
    target="polyps",
    dataset="Kvasir-SEG",
    description="Kvasir-SEG colonoscopy polyps: 1000 images, seeded 800 / 200 split, 512x512",
    url="https://datasets.simula.no/kvasir-seg/",
    licence="research and educational use; cite the owners (see the Kvasir-SEG page)",
    citation=(
        "D. Jha, P. H. Smedsrud, M. A. Riegler, P. Halvorsen, T. de Lange, D. Johansen, H. D. Johansen: "
        "Kvasir-SEG: A segmented polyp dataset. MultiMedia Modeling (MMM), LNCS 11962:451-462, 2020"
    ),
    expected_total=1000,
)


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(FolderTask(KVASIR_SEG))

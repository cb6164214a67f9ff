"""An example ssl-bench task plugin: segment bright disks on a noisy background, generated, so no data is needed.

A real task reads its files under ``data_root`` in the owners' layout, says in ``availability`` whether they are
there (and where to get them), and raises ``DataError`` from ``load`` for files that cannot be right.
"""

import torch

from ssl_bench.api import SegmentationData, SegmentationSplit, Task, hookimpl


def disks(n: int, size: int, seed: int) -> SegmentationSplit:
    """``n`` grey images with one bright disk each (the mask), at a seeded random place and radius."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.rand(n, 2, generator=generator) * size * 0.5 + size * 0.25
    radii = torch.rand(n, generator=generator) * size * 0.15 + size * 0.1
    distance = ((rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2).sqrt()
    masks = distance < radii[:, None, None]
    noise = torch.randint(0, 60, (n, 1, size, size), generator=generator)
    images = (30 + noise + 140 * masks.unsqueeze(1)).to(torch.uint8)
    return SegmentationSplit(images, masks, tuple(f"disk-{seed}-{i}" for i in range(n)))


class Disks(Task):
    name = "example-disks"
    description = "Example plugin: bright disks on noise (generated)"
    modality = "synthetic-example"  # pools and tasks meet by modality: this one pretrains on its own images
    channels = 1
    target = "disks"
    flips = True
    rotation_degrees = 180.0
    expected_counts = (24, 8)

    def load(self, data_root):  # data_root is unused: the data are generated
        return SegmentationData(disks(24, 64, seed=0), disks(8, 64, seed=1))


@hookimpl
def ssl_bench_register_tasks(register):
    register(Disks())  # tasks register instances (methods and protocols register classes)

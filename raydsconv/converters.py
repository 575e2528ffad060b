"""The predecessor's (hpc_pytorch_loader) converter classes, kept so its users can switch.

``MemmapConverter(input_data, output_path, images_per_file, batch_size, num_workers, shape,
im_mode).convert()`` runs the Ray pipeline: ``batch_size`` is the number of images prepared per
call inside a task (any value; it need not divide ``images_per_file``), ``num_workers`` caps the
number of concurrent tasks (0, the predecessor's in-process default: one task at a time). Any
other keyword of ``raydsconv.convert`` may be passed too.

The predecessor's ``dist``, ``rank`` and ``num_replicas`` are accepted. There, ``dist=True`` split
one conversion over the ranks of a job, each rank writing its share of the files. Here one
conversion uses every CPU of its Ray cluster, which may span many nodes:

- under ``srun -n N python convert.py`` (the predecessor's launch line; ``dist`` either way) the ranks
  of the SLURM step form that cluster: rank 0 starts a Ray head and converts, the first rank on each
  other node runs a Ray worker node until rank 0's conversion has ended, and ``convert()`` returns
  rank 0's report on every rank (or raises its error on every rank), so the script goes on alike
  everywhere (``raydsconv.slurm``; RAYDSCONV_SLURM_RANKS=0 turns this off). ``dist=True`` is then
  accepted with the step's ranks (``num_replicas`` the number of tasks, ``rank`` this one's
  ``SLURM_PROCID``), whatever gave them (arguments, ``torch.distributed``, the environment);
- ``dist=False``, or a job of a single rank, converts as always;
- ``dist=True`` with several ranks anywhere else (torchrun, ``torch.distributed`` outside a SLURM
  step, ranks that are not the step's, or with an ``address``) is refused when the converter is
  made: every rank would convert the whole dataset.

The ranks come from ``num_replicas``/``rank``, else from ``torch.distributed`` when a process group
is initialised, else from torchrun's ``WORLD_SIZE``/``RANK``, else from SLURM's
``SLURM_NTASKS``/``SLURM_PROCID`` inside a step.

Converters have the predecessor's attributes: ``len`` (alias ``length``), ``images_per_file``,
``total_num_arrays`` (alias ``num_arrays``), ``len_last_array``, ``shape``, ``im_mode``,
``class_to_idx``. After ``convert()`` they describe the dataset written (``report`` holds the
ConversionReport); before, the candidates the source lists (listed once, when first asked).

The ``Dense*`` converters, the predecessor's names, are the same converters with ``target="mask"``:
segmentation data (a folder of images/ and masks/, or a torch Dataset of (image, mask)).

A new format is added by writing its ShardWriter/ShardReader and registering it in
``raydsconv.formats.FORMATS``; a converter class for it is one subclass naming the format.
"""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

from raydsconv.conversion import ConversionReport, convert
from raydsconv.errors import InvalidArgumentError
from raydsconv.predecessor import ShardCounts
from raydsconv.slurm import step_ranks, this_step


class _Converter:
    format: ClassVar[str]
    target: ClassVar[str | None] = None  # the default target kind (see raydsconv.targets)

    def __init__(self, input_data: Any, output_path: str | os.PathLike, images_per_file: int = 1000,
                 batch_size: int = 32, num_workers: int | None = None, *, dist: bool = False,
                 rank: int | None = None, num_replicas: int | None = None, **options: Any):
        self.input_data = input_data
        self.output_path = output_path
        self.images_per_file = images_per_file
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dist = dist
        self.rank, self.num_replicas = (_ranks(rank, num_replicas, options.get("address")) if dist
                                        else (rank, num_replicas))
        self.options = options
        self.report: ConversionReport | None = None
        self._listed: tuple[ShardCounts, list[str]] | None = None

    def convert(self) -> ConversionReport:
        self.report = convert(self.input_data, self.output_path, format=self.format,
                              images_per_file=self.images_per_file, batch_size=self.batch_size,
                              num_workers=self.num_workers, **{"target": self.target, **self.options})
        return self.report

    # The predecessor's attributes (see raydsconv.predecessor)
    @property
    def len(self) -> int:
        return self._shards_and_classes()[0].num_samples

    length = len  # the predecessor converter's name

    @property
    def total_num_arrays(self) -> int:
        return self._shards_and_classes()[0].total_num_arrays

    num_arrays = total_num_arrays  # the predecessor converter's name

    @property
    def len_last_array(self) -> int:
        return self._shards_and_classes()[0].len_last_array

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self._shards_and_classes()[1])}

    def _shards_and_classes(self) -> tuple[ShardCounts, list[str]]:
        """The written dataset's after convert(); before, those of the candidates the source lists."""
        if self.report is not None:
            return ShardCounts.of_manifest(self.report.manifest), self.report.manifest.classes
        if self._listed is None:
            from raydsconv.sources import LabelsTable, list_source
            from raydsconv.targets import resolve_target

            kind = resolve_target(self.options.get("target", self.target), dense=self.options.get("dense", False))
            labels = self.options.get("labels")
            listing = list_source(self.input_data, root_in_archive=self.options.get("root_in_archive"), target=kind,
                                  labels=LabelsTable(str(labels), *(self.options.get("label_columns") or (None, None)))
                                  if labels is not None else None)
            self._listed = ShardCounts.planned(len(listing), self.images_per_file), listing.classes
        return self._listed


def _ranks(rank: int | None, num_replicas: int | None, address: str | None) -> tuple[int, int]:
    """The rank and number of ranks of a ``dist=True`` converter: one rank, or the ranks of the SLURM
    step that share its conversion (see above)."""
    step = this_step(address)
    distributed = sys.modules.get("torch.distributed")  # imported by whoever set up a process group
    initialised = distributed is not None and distributed.is_available() and distributed.is_initialized()
    if initialised:
        given = distributed.get_world_size(), distributed.get_rank()
    elif "WORLD_SIZE" in os.environ:
        given = int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", "0"))
    else:  # the tasks of a SLURM step, shared or not
        given = step_ranks() or (1, 0)
    num_replicas = given[0] if num_replicas is None else num_replicas
    rank = given[1] if rank is None else rank
    if step is not None and (num_replicas, rank) == (step.ranks, step.rank):
        return rank, num_replicas  # one conversion over the step's ranks (raydsconv.slurm)
    if num_replicas > 1:
        where = (f"; this SLURM step has {step.ranks} ranks, this one rank {step.rank}: pass those, or none"
                 if step is not None else "")
        raise InvalidArgumentError(
            f"dist=True with {num_replicas} ranks{where}: raydsconv does not split a conversion over ranks, one "
            "conversion uses every node of its Ray cluster; run it once (one process, not one per rank) on a Ray "
            "cluster spanning your nodes, e.g. sbatch --nodes=N jobs/slurm/convert.sbatch SRC DST ..., or under "
            "srun -n N (the step's ranks form that cluster), or pass dist=False")
    if rank != 0:
        raise InvalidArgumentError(f"rank {rank} of {num_replicas} ranks: a single-rank conversion is rank 0 of 1")
    return rank, num_replicas


class ConverterFixedSize(_Converter):
    """Base of the converters that store resized pixels; a subclass names its format."""

    def __init__(self, input_data: Any, output_path: str | os.PathLike, images_per_file: int = 1000,
                 batch_size: int = 32, num_workers: int | None = None, shape: tuple[int, int] | None = None,
                 im_mode: str = "RGB", root_in_archive: str | None = None, **options: Any):
        super().__init__(input_data, output_path, images_per_file, batch_size, num_workers,
                         shape=shape, mode=im_mode, root_in_archive=root_in_archive, **options)
        self.shape, self.im_mode = shape, im_mode


class ConverterFlexibleSize(_Converter):
    """Base of the converters that keep the original file bytes; a subclass names its format."""

    def __init__(self, input_data: Any, output_path: str | os.PathLike, images_per_file: int = 1000,
                 batch_size: int = 32, num_workers: int | None = None, root_in_archive: str | None = None,
                 **options: Any):
        super().__init__(input_data, output_path, images_per_file, batch_size, num_workers,
                         root_in_archive=root_in_archive, **options)


class MemmapConverter(ConverterFixedSize):
    format = "memmap"


class HDF5Converter(ConverterFixedSize):
    format = "hdf5"


Hdf5Converter = HDF5Converter  # the predecessor's spelling


class ParquetConverter(ConverterFlexibleSize):
    format = "parquet"


class IpcConverter(ConverterFlexibleSize):
    format = "ipc"


class TarConverter(ConverterFlexibleSize):
    format = "tar"


class DenseMemmapConverter(MemmapConverter):
    target = "mask"


class DenseHDF5Converter(HDF5Converter):
    target = "mask"


class DenseParquetConverter(ParquetConverter):
    target = "mask"


class DenseIpcConverter(IpcConverter):
    target = "mask"


class DenseTarConverter(TarConverter):
    target = "mask"

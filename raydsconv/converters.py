"""The predecessor's (hpc_pytorch_loader) converter classes, kept so its users can switch.

``MemmapConverter(input_data, output_path, images_per_file, batch_size, num_workers, shape,
im_mode).convert()`` runs the Ray pipeline: ``batch_size`` is the number of images prepared per
call inside a task (any value; it need not divide ``images_per_file``), ``num_workers`` caps the
number of concurrent tasks. Any other keyword of ``raydsconv.convert`` may be passed too.

The ``Dense*`` converters take segmentation data (a folder of images/ and masks/, or a torch
Dataset of (image, mask)): ``convert(..., dense=True)``.

A new format is added by writing its ShardWriter/ShardReader and registering it in
``raydsconv.formats.FORMATS``; a converter class for it is one subclass naming the format.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from raydsconv.conversion import ConversionReport, convert


class _Converter:
    format: ClassVar[str]
    dense: ClassVar[bool] = False

    def __init__(self, input_data: Any, output_path: str | os.PathLike, images_per_file: int = 1000,
                 batch_size: int = 32, num_workers: int | None = None, **options: Any):
        self.input_data = input_data
        self.output_path = output_path
        self.images_per_file = images_per_file
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.options = options

    def convert(self) -> ConversionReport:
        return convert(self.input_data, self.output_path, format=self.format, images_per_file=self.images_per_file,
                       batch_size=self.batch_size, num_workers=self.num_workers, **{"dense": self.dense, **self.options})


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
    dense = True


class DenseHDF5Converter(HDF5Converter):
    dense = True


class DenseParquetConverter(ParquetConverter):
    dense = True


class DenseIpcConverter(IpcConverter):
    dense = True


class DenseTarConverter(TarConverter):
    dense = True

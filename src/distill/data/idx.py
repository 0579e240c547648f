"""Reader (and writer, for fixtures) of the IDX format used by (Fashion-)MNIST.

Layout: 2 zero bytes, a type byte (0x08 = uint8), a byte with the number of
dimensions, then each dimension as a big-endian uint32, then the data.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from distill.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed when it ends in .gz) into a numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}. Fix: the file is corrupt; reinstall or re-download it.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number). Fix: point data.path at the original *-idx*-ubyte.gz files.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header. Fix: the file is corrupt; reinstall or re-download it.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header promises {dims} ({expected} bytes) but the file holds {len(raw) - header} bytes. "
            "Fix: the file is truncated or corrupt; reinstall or re-download it."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip IDX file (used to build test fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(gzip.compress(header + array.tobytes()))

"""TFRecord files without TensorFlow: framing, checksums, a whole-or-absent shard writer.

A TFRecord file is a sequence of records, each framed as
`uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`
(little-endian), where the mask is the CRC-32C rotated right by 15 bits plus 0xA282EAD8
(`tensorflow/core/lib/hash/crc32c.h`). `tf.data.TFRecordDataset` reads these files
unchanged. CRC-32C comes from `google-crc32c` (an install requirement).
"""

import struct

import google_crc32c

from lgd_io import files


def crc32c(data):
    """CRC-32C (Castagnoli) of `data`."""
    return google_crc32c.value(bytes(data))


def masked_crc32c(data):
    """The TFRecord checksum: CRC-32C, rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record):
    """One record's bytes as they are stored in a TFRecord file."""
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", masked_crc32c(length)) + record
            + struct.pack("<I", masked_crc32c(record)))


def write_records(handle, records):
    """Writes each record, framed, to an open binary file; returns the count."""
    count = 0
    for record in records:
        handle.write(frame(record))
        count += 1
    return count


def read_records(path):
    """Yields the records of a TFRecord file, checking both checksums of each."""
    with open(path, "rb") as handle:
        while header := handle.read(12):
            if len(header) < 12 or masked_crc32c(header[:8]) != struct.unpack(
                    "<I", header[8:])[0]:
                raise ValueError(f"{path}: corrupt TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            data, footer = handle.read(length), handle.read(4)
            if len(footer) < 4 or masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise ValueError(f"{path}: corrupt or truncated TFRecord data")
            yield data


def write_shard(path, serialized_records):
    """Writes records under a temporary name, then renames: a shard is whole or absent.

    The file gets the user's umask (like any file the user creates). Local paths only: a
    remote output (`gs://...`) is written by `lgd_io.files`, which uses TensorFlow's file
    systems for it.
    """
    def write(tmp):
        with files.open_file(tmp, "wb") as handle:
            write_records(handle, serialized_records)

    files.atomic_write(path, write)

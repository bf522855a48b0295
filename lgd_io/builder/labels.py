"""Labels CSVs: the list of videos of a build, their classes and media ids."""

import csv
import os
import pathlib
import typing

from absl import logging

from lgd_io.builder.shards import VideoEntry

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".gif", ".mov", ".m4v", ".mpg", ".mpeg",
                    ".ts")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")  # and optional `split`
PATH_LABEL_COLUMNS = ("path", "label")
CSV_LAYOUTS = ("the Kinetics columns `label,youtube_id,time_start,time_end,split` (split "
               "optional) or `path,label` (paths relative to the videos folder), "
               "comma-separated, named in a header row (any order)")


class LabelsTable(typing.NamedTuple):
    """A labels CSV read: entries, class names (index order), rows without a video file
    (name, reason), and the number of duplicate rows dropped."""

    entries: list
    class_names: list
    missing: list
    duplicates: int = 0


def _kinetics_time(value, column, row_number):
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"row {row_number}: `{column}` is not a number. Received: "
                         f"{value!r}") from None


def _read_rows(csv_path):
    """(layout, header index, data rows with their line numbers) of a labels CSV."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{csv_path} is empty; expected {CSV_LAYOUTS}")
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    if delimiter != ",":
        raise ValueError(f"{csv_path} is separated by {delimiter!r}, not commas; expected "
                         f"{CSV_LAYOUTS}")
    rows = [(n, [c.strip() for c in row]) for n, row in
            enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in row)]
    header = [c.lower() for c in rows[0][1]]
    if all(c in header for c in KINETICS_COLUMNS):
        layout = "kinetics"
    elif all(c in header for c in PATH_LABEL_COLUMNS):
        layout = "path_label"
    elif len(header) == 2 and header[0].endswith(VIDEO_EXTENSIONS):
        return "path_label", {"path": 0, "label": 1}, rows  # no header row: `path,label` rows
    else:
        raise ValueError(f"{csv_path} has columns {rows[0][1]}; expected {CSV_LAYOUTS}")
    if len(rows) == 1:
        raise ValueError(f"{csv_path} has a header row but no rows; expected {CSV_LAYOUTS}")
    return layout, {name: header.index(name) for name in header}, rows[1:]


def read_labels_csv(csv_path, videos_dir, *, split=None, class_names=None):
    """Reads a labels CSV into `VideoEntry`s with unique media ids and the class names.

    Columns are found by their header names, in any order (a UTF-8 BOM is fine):
    - Kinetics `label,youtube_id,time_start,time_end[,split]`: media id
      `{youtube_id}_{time_start:06d}_{time_end:06d}` (the public download scripts' names).
      A file named `<media id>.<ext>` under `videos_dir` is the trimmed segment; otherwise an
      untrimmed `<youtube_id>.<ext>` is trimmed to [time_start, time_end) for each row.
    - `path,label` (header optional when the first column names a video file): media id =
      the path relative to `videos_dir` without its extension (`a/clip`, `b/clip` differ).
    A row whose media id was already read is dropped with a warning (counted). Class indices
    follow `class_names` if given (a label not in it is an error), else the sorted names of
    every row, found or not (or the integers themselves when every label is an integer): a
    class whose videos are all missing keeps its index, and the build names it.

    Returns:
        LabelsTable(entries, class_names, missing, duplicates); missing lists
        (name, reason) of rows whose file was not found.

    Raises:
        ValueError: one line naming the file and the expected columns.
    """
    layout, column, rows = _read_rows(csv_path)
    cell = _cell_reader(csv_path, column)
    read = _kinetics_rows if layout == "kinetics" else _path_label_rows
    parsed, missing, seen, duplicates = [], [], set(), 0
    absent = set()  # labels of rows without a video file: their classes keep their index
    for n, label, media_id, found, reason in read(rows, column, cell,
                                                  pathlib.Path(videos_dir), split):
        if media_id in seen:
            duplicates += 1
            logging.warning("Dropping duplicate row %d of %s (%s)", n, csv_path, media_id)
            continue
        seen.add(media_id)
        if found is None:
            missing.append(reason)
            absent.add(label)
        else:
            parsed.append((found[0], label, media_id, found[1], found[2]))
    class_names = _class_names(sorted({p[1] for p in parsed} | absent), class_names, csv_path)
    lookup = {name: i for i, name in enumerate(class_names)}
    entries = [VideoEntry(path, lookup[lab], lab, mid, t0, t1)
               for path, lab, mid, t0, t1 in parsed]
    return LabelsTable(entries, list(class_names), missing, duplicates)


def _cell_reader(csv_path, column):
    """`cell(row, name, row_number)`: the row's value in column `name` (ValueError naming the
    row if the row is too short)."""
    def cell(row, name, n):
        if column[name] >= len(row):
            raise ValueError(f"{csv_path}: row {n} has {len(row)} columns, no `{name}`; "
                             f"expected {CSV_LAYOUTS}")
        return row[column[name]]

    return cell


def _kinetics_rows(rows, column, cell, videos_dir, split):
    """(row number, label, media id, (path, t0, t1) or None, (name, reason) of a missing
    file) of each Kinetics row of `split`: the trimmed `<media id>.<ext>` (t0, t1 None), else
    the untrimmed `<youtube_id>.<ext>` with the row's times, found anywhere under videos_dir."""
    index = {}
    for p in sorted(videos_dir.rglob("*")):
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            index.setdefault(p.stem, p)
    for n, row in rows:
        if split is not None and "split" in column and cell(row, "split", n) != split:
            continue
        label, yid = cell(row, "label", n), cell(row, "youtube_id", n)
        t0 = _kinetics_time(cell(row, "time_start", n), "time_start", n)
        t1 = _kinetics_time(cell(row, "time_end", n), "time_end", n)
        media_id = f"{yid}_{int(round(t0)):06d}_{int(round(t1)):06d}"
        if media_id in index:
            yield n, label, media_id, (str(index[media_id]), None, None), None
        elif yid in index:
            yield n, label, media_id, (str(index[yid]), t0, t1), None
        else:
            yield n, label, media_id, None, (media_id, "no video file found")


def _path_label_rows(rows, column, cell, videos_dir, split):
    """(row number, label, media id, (path, None, None) or None, (path, reason) of a missing
    file) of each `path,label` row; the media id is the path without its extension."""
    del column, split  # a `path,label` CSV has no split column
    for n, row in rows:
        relative, label = cell(row, "path", n), cell(row, "label", n)
        media_id = str(pathlib.PurePosixPath(relative.replace(os.sep, "/")).with_suffix(""))
        path = videos_dir / relative
        if path.exists():
            yield n, label, media_id, (str(path), None, None), None
        else:
            yield n, label, media_id, None, (str(path), "no such file")


def _class_names(labels, class_names, csv_path):
    """`class_names` (ValueError if a label is not in it), else the sorted labels, or
    "0".."max" when every label is an integer."""
    if class_names is None:
        if labels and all(x.isdigit() for x in labels):
            class_names = [str(i) for i in range(max(int(x) for x in labels) + 1)]
        else:
            class_names = labels
    known = set(class_names)
    unknown = [x for x in labels if x not in known]
    if unknown:
        raise ValueError(f"Labels not in class_names: {unknown[:5]}. Received CSV: {csv_path}")
    return class_names

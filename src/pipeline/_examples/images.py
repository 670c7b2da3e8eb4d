"""An image pipeline: load and resize, filter, compute features, save thumbnails and a CSV.

    paths -> LoadImage x2 (threads) -> Enhance (thread) -> ComputeFeatures xN (processes)
          -> SaveResults x1 (thread: thumbnails/*.jpg, features.csv)

Each stage is a ``PipelineStage`` subclass, written to be copied:

- ``LoadImage`` decodes a file with Pillow, flattens any transparency onto
  white, converts it to RGB and shrinks it to a thumbnail. A file Pillow
  cannot read becomes a dead letter (``on_error="skip"``) rather than the
  end of the run. Two threads: decoding is C code that releases the GIL.
- ``Enhance`` runs a filter chain (denoise, sharpen, stretch the contrast).
- ``ComputeFeatures`` measures edge density (a Sobel filter), the dominant
  colours with the nearest CSS colour name, the brightness and a perceptual
  hash (dHash), in pure Python: the CPU-heavy stage, so it runs on worker
  processes (``executor="process"``), one per worker. Its ``on_start``
  builds a lookup table once per worker process.
- ``SaveResults`` writes each thumbnail and appends a CSV row. One worker:
  it owns the CSV file, opened in ``on_start`` and closed in ``on_stop``.

Images finish in any order (``ordered=False``): a small one need not wait
behind a big one, and the CSV names the file on each row.

Stages that run in worker processes are pickled: they are defined at
module level and their attributes are plain values; what they build for
themselves, they build in ``on_start``, in the process that uses it. Items
cross to the worker processes and back pickled too: a ``Thumbnail`` holds a
PIL image, which pickles as its mode, size and raw pixels. That costs what
sending those bytes yourself would (about 0.3 ms each way for a 256x256 RGB
thumbnail, measured), next to the ~60 ms of work the process does on it,
so the items stay readable.

Run it with ``./run_custom_example.py``, ``python examples/custom_stage.py``
or ``python -m pipeline custom`` (it needs Pillow:
``pip install 'threaded-pipeline[examples]'``).

Past 400 lines: it is a template to read and copy as one file (the items,
the stages, the features they compute and the command line), not a module
of the library.
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageColor, ImageFilter, ImageOps

from pipeline import Pipeline, PipelineReport, PipelineStage
from pipeline._cli import (
    add_observing_options,
    observers_from,
    parse_args,
    run_reporting,
    whole_number,
)
from pipeline._dask_cli import add_dask_option, on_cluster
from pipeline._stdout import reader_may_leave

from .samples import generate

__all__ = [
    "THUMBNAIL_SIZE",
    "Analysed",
    "ComputeFeatures",
    "Enhance",
    "ImageFeatures",
    "LoadImage",
    "SaveResults",
    "Thumbnail",
    "build",
    "find_images",
    "main",
]

logger = logging.getLogger("pipeline.examples.images")

LOG_FORMAT = "[%(levelname)s] %(message)s"

THUMBNAIL_SIZE = 256
"""The longest side of a thumbnail, in pixels."""

EDGE_THRESHOLD = 128
"""A pixel is on an edge when its Sobel gradient, |gx| + |gy|, exceeds this."""

CSV_FIELDS = (
    "file", "width", "height", "mode", "thumbnail", "thumb_width", "thumb_height",
    "edge_density", "brightness", "colour_1", "colour_2", "colour_3", "dhash", "worker",
)  # fmt: skip


# -- what travels between the stages: small, picklable dataclasses -------------------


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A decoded image on its way through the pipeline."""

    source: Path
    width: int  # of the original
    height: int
    mode: str  # the original's mode: "RGB", "P", "CMYK"...
    image: Image.Image  # the thumbnail, RGB


@dataclass(frozen=True, slots=True)
class ImageFeatures:
    """What ``ComputeFeatures`` measured on a thumbnail."""

    edge_density: float  # the share of pixels on an edge, 0 to 1
    brightness: float  # the mean grey level, 0 (black) to 1 (white)
    colours: tuple[str, ...]  # up to three, most common first: "#f01010 red 41%"
    dhash: str  # 64-bit difference hash, 16 hex digits: similar images, similar hashes
    worker: str  # which worker computed them (a process name, or a thread name)


@dataclass(frozen=True, slots=True)
class Analysed:
    """A thumbnail and its features, ready to be saved."""

    thumbnail: Thumbnail
    features: ImageFeatures


# -- the stages --------------------------------------------------------------------


class LoadImage(PipelineStage[Path, Thumbnail]):
    """Decode an image file, flatten it to RGB and shrink it to a thumbnail.

    Pillow raises for a file it cannot read (``UnidentifiedImageError``, or
    ``OSError`` for a truncated one); under ``on_error="skip"`` that file
    becomes a dead letter. The file is read in full inside ``process()``
    (Pillow opens lazily), so the error belongs to this stage and this item.
    """

    def __init__(self, size: int = THUMBNAIL_SIZE) -> None:
        super().__init__(name="load")
        self.size = size

    def process(self, item: Path) -> Thumbnail:
        with Image.open(item) as opened:
            width, height, mode = opened.width, opened.height, opened.mode
            # draft() lets JPEG decode at a reduced scale: far less work for a thumbnail.
            opened.draft("RGB", (self.size, self.size))
            image = ImageOps.exif_transpose(opened)  # camera photos: the right way up
            image = _flatten(image)
        image.thumbnail((self.size, self.size))
        return Thumbnail(item, width, height, mode, image)


def _flatten(image: Image.Image) -> Image.Image:
    # RGB, with any transparency composited onto white.
    if image.mode == "RGB":
        image.load()
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


class Enhance(PipelineStage[Thumbnail]):
    """Apply a filter chain to each thumbnail: by default denoise, sharpen, stretch contrast.

    Pillow's filters are C code that releases the GIL, so threads are right
    for this stage; ``filters`` are applied in order.
    """

    def __init__(self, filters: Sequence[ImageFilter.Filter] | None = None) -> None:
        super().__init__(name="enhance")
        self.filters = tuple(filters) if filters is not None else DEFAULT_FILTERS

    def process(self, item: Thumbnail) -> Thumbnail:
        image = item.image
        for image_filter in self.filters:
            image = image.filter(image_filter)
        image = ImageOps.autocontrast(image, cutoff=1)
        return Thumbnail(item.source, item.width, item.height, item.mode, image)


DEFAULT_FILTERS: tuple[ImageFilter.Filter, ...] = (
    ImageFilter.MedianFilter(3),  # denoise
    ImageFilter.UnsharpMask(radius=2, percent=120, threshold=3),  # sharpen
)


class ComputeFeatures(PipelineStage[Thumbnail, Analysed]):
    """Measure edges, colours, brightness and a perceptual hash, in pure Python.

    The CPU-heavy stage: under a GIL, threads would take turns at it, so it
    runs on worker processes (``executor="process"``). The stage object is
    pickled to each worker process, so ``__init__`` keeps only plain values
    (a threshold, a log level); ``on_start`` runs once in each worker, in the
    process that will use what it builds: here the table from colour buckets
    to CSS colour names, and the logging of a fresh process.
    """

    def __init__(self, *, threshold: int = EDGE_THRESHOLD, log_level: int = logging.INFO) -> None:
        super().__init__(name="features")
        self.threshold = threshold
        self.log_level = log_level
        self.worker = ""  # set by on_start, in each worker
        self._names: tuple[str, ...] = ()  # colour bucket -> CSS name, built by on_start

    def on_start(self) -> None:
        if multiprocessing.parent_process() is not None:
            # A worker process starts with no logging configured: set it up.
            logging.basicConfig(level=self.log_level, format=LOG_FORMAT)
            self.worker = f"{multiprocessing.current_process().name} (pid {os.getpid()})"
        else:
            self.worker = threading.current_thread().name
        self._names = _bucket_names()
        logger.info("features worker %s ready", self.worker)

    def process(self, item: Thumbnail) -> Analysed:
        image = item.image
        grey = image.convert("L")
        features = ImageFeatures(
            edge_density=round(_edge_density(grey, self.threshold), 4),
            brightness=round(sum(grey.tobytes()) / (255 * grey.width * grey.height), 4),
            colours=_dominant_colours(image, self._names),
            dhash=_dhash(grey),
            worker=self.worker,
        )
        return Analysed(item, features)


class SaveResults(PipelineStage[Analysed, Path]):
    """Save each thumbnail as a JPEG and append its features to a CSV file; emit the path.

    One worker owns the CSV file: ``single_worker`` makes ``add()`` refuse
    more. It is opened in ``on_start`` and closed in ``on_stop``, which runs
    however the run ends, so the rows written are always flushed.
    """

    single_worker = True

    def __init__(self, output: Path) -> None:
        super().__init__(name="save")
        self.output = output
        self.thumbnails = output / "thumbnails"
        self.csv_path = output / "features.csv"
        self.saved = 0
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None

    def on_start(self) -> None:
        self.thumbnails.mkdir(parents=True, exist_ok=True)
        self._file = self.csv_path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, CSV_FIELDS)
        self._writer.writeheader()

    def process(self, item: Analysed) -> Path:
        if self._writer is None:
            raise RuntimeError("SaveResults.process() before on_start()")
        thumb, features = item.thumbnail, item.features
        target = self.thumbnails / f"{thumb.source.name}.jpg"
        thumb.image.save(target, "JPEG", quality=85)
        colours = [*features.colours, "", "", ""][:3]
        self._writer.writerow({
            "file": thumb.source.name,
            "width": thumb.width,
            "height": thumb.height,
            "mode": thumb.mode,
            "thumbnail": target.relative_to(self.output).as_posix(),
            "thumb_width": thumb.image.width,
            "thumb_height": thumb.image.height,
            "edge_density": features.edge_density,
            "brightness": features.brightness,
            "colour_1": colours[0],
            "colour_2": colours[1],
            "colour_3": colours[2],
            "dhash": features.dhash,
            "worker": features.worker,
        })  # fmt: skip
        self.saved += 1
        logger.info(
            "saved %s: %dx%d %s, edges %.3f, %s, dhash %s",
            thumb.source.name, thumb.width, thumb.height, thumb.mode,
            features.edge_density, colours[0], features.dhash,
        )  # fmt: skip
        return target

    def on_stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


# -- the features, in pure Python ------------------------------------------------------


def _edge_density(grey: Image.Image, threshold: int) -> float:
    # The share of inner pixels whose Sobel gradient |gx| + |gy| exceeds threshold.
    width, height = grey.size
    if width < 3 or height < 3:
        return 0.0
    g = grey.tobytes()
    edges = 0
    for y in range(1, height - 1):
        up, row, down = (y - 1) * width, y * width, (y + 1) * width
        for x in range(1, width - 1):
            a, b, c = g[up + x - 1], g[up + x], g[up + x + 1]
            d, f = g[row + x - 1], g[row + x + 1]
            p, q, r = g[down + x - 1], g[down + x], g[down + x + 1]
            gx = c + 2 * f + r - a - 2 * d - p
            gy = p + 2 * q + r - a - 2 * b - c
            if abs(gx) + abs(gy) > threshold:
                edges += 1
    return edges / ((width - 2) * (height - 2))


def _bucket_names() -> tuple[str, ...]:
    # For each of the 512 colour buckets (3 bits a channel), the CSS colour
    # name nearest to the bucket's centre: 512 x 148 distances, once per worker.
    named = [(name, ImageColor.getrgb(name)[:3]) for name in sorted(ImageColor.colormap)]

    def nearest(centre: tuple[int, int, int]) -> str:
        def distance(entry: tuple[str, tuple[int, ...]]) -> int:
            return sum((u - v) ** 2 for u, v in zip(entry[1], centre, strict=True))

        return min(named, key=distance)[0]

    return tuple(nearest(_bucket_centre(bucket)) for bucket in range(512))


def _bucket_centre(bucket: int) -> tuple[int, int, int]:
    return ((bucket >> 6) * 32 + 16, (bucket >> 3 & 7) * 32 + 16, (bucket & 7) * 32 + 16)


def _dominant_colours(image: Image.Image, names: Sequence[str]) -> tuple[str, ...]:
    # The three most common colour buckets, as "#rrggbb name share%".
    counts = [0] * 512
    rgb = image.tobytes()
    for i in range(0, len(rgb), 3):
        counts[(rgb[i] >> 5) << 6 | (rgb[i + 1] >> 5) << 3 | rgb[i + 2] >> 5] += 1
    total = len(rgb) // 3
    top = sorted(range(512), key=lambda bucket: -counts[bucket])[:3]
    return tuple(
        f"{_hex(_bucket_centre(bucket))} {names[bucket]} {round(100 * counts[bucket] / total)}%"
        for bucket in top
        if counts[bucket]
    )


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _dhash(grey: Image.Image) -> str:
    # Shrink to 9x8; each bit says whether a pixel is brighter than its right neighbour.
    small = grey.resize((9, 8), Image.Resampling.LANCZOS).tobytes()
    bits = 0
    for y in range(8):
        for x in range(8):
            bits = bits << 1 | (small[y * 9 + x] > small[y * 9 + x + 1])
    return f"{bits:016x}"


# -- the pipeline -------------------------------------------------------------------


def build(
    output: Path,
    *,
    workers: int = 2,
    executor: Any = "process",
    log_level: int = logging.INFO,
) -> tuple[Pipeline[Path, Path], SaveResults]:
    """Return the image pipeline writing into ``output``, and its saving stage.

    ``executor`` is where the features stage runs: ``"process"``,
    ``"thread"``, or a Dask cluster (a ``distributed.Client``, as ``--dask``
    gives): each of its ``workers`` is then a batch in flight there.

    ``maxsize=16`` bounds every queue to 16 images: the queue's default bound
    comes from ``sys.getsizeof`` of the first item, which sees a small
    dataclass, not the pixels it holds.
    """
    saver = SaveResults(output)
    pipeline = (
        Pipeline[Path](maxsize=16)
        .add(LoadImage(), workers=2, ordered=False, on_error="skip")
        .add(Enhance())
        .add(
            ComputeFeatures(log_level=log_level),
            workers=workers,
            executor=executor,
            ordered=False,
        )
        .add(saver)
    )
    return pipeline, saver


def find_images(folder: Path) -> list[Path]:
    """The files in ``folder`` (not its subfolders) whose suffix Pillow knows, sorted."""
    known = {suffix.lower() for suffix in Image.registered_extensions()}
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in known
    )


# -- the command line ----------------------------------------------------------------


def _folder(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text!r}")
    return path


def _output_folder(text: str) -> Path:
    # Created now, so that a folder that cannot be is a usage error naming the option.
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot create {text!r}: {exc.strerror}") from None
    return path


def _default_workers() -> int:
    # One per CPU this process may use, at most 8.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cpus or 1))


def build_parser(prog: str) -> argparse.ArgumentParser:
    """Return the argument parser of the image example."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run an image pipeline: load and resize, filter, compute features on worker "
            "processes, save thumbnails and a CSV of features. Without --input it "
            "generates sample images (and one truncated file, a dead letter)."
        ),
        epilog="Exit codes: 0 success, 1 pipeline error, 2 usage error, 130 interrupted.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=_folder, metavar="DIR", help="a folder of images")
    source.add_argument(
        "--images",
        type=whole_number(0, 100_000),
        metavar="N",
        help="without --input: how many sample images to generate (default 24)",
    )
    parser.add_argument(
        "--output",
        type=_output_folder,
        metavar="DIR",
        help="where thumbnails/ and features.csv go, and samples/ when generated "
        "(default: a new temporary folder, kept, and named in the output)",
    )
    parser.add_argument(
        "--seed", type=whole_number(0), default=7, help="seed of the sample images (default 7)"
    )
    parser.add_argument(
        "--sample-size",
        type=whole_number(8, 4096),
        default=512,
        metavar="PX",
        help="the longest side of a sample image (default 512; sides vary from half of it)",
    )
    parser.add_argument(
        "--workers",
        type=whole_number(1, 64),
        default=_default_workers(),
        metavar="N",
        help="workers of the features stage (default: one per CPU, at most 8; "
        f"here {_default_workers()})",
    )
    parser.add_argument(
        "--executor",
        choices=("process", "thread"),
        default="process",
        help="where the features stage runs (default process; thread shows the GIL's cost)",
    )
    add_dask_option(parser, "the features stage instead (--workers: batches in flight there)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-image log lines")
    add_observing_options(parser)
    return parser


@reader_may_leave
def main(argv: Sequence[str] | None = None, *, prog: str = "run_custom_example.py") -> int:
    """Run the image pipeline with ``argv``; print the report; return the exit code."""
    args = parse_args(build_parser(prog), argv)
    if isinstance(args, int):
        return args
    level = logging.WARNING if args.quiet else logging.INFO
    with _logging_to_stderr(level):
        on = on_cluster(args.dask, tasks=args.workers, prog=prog, default=args.executor)
        with on as executor:
            if isinstance(executor, int):
                return executor  # the cluster could not be reached, or Ctrl-C meanwhile
            return _run(args, executor, level)


def _run(args: argparse.Namespace, executor: Any, level: int) -> int:
    # The run, its stages on `executor`; the report printed; the exit code.
    output: Path = args.output or Path(tempfile.mkdtemp(prefix="pipeline-images-"))
    pipeline, saver = build(output, workers=args.workers, executor=executor, log_level=level)

    def process_images() -> PipelineReport | None:
        # Inside run_reporting: a Ctrl-C while the samples are written exits 130 too.
        if args.input is not None:
            paths = find_images(args.input)
            logger.info("%d images in %s", len(paths), args.input)
        else:
            count = 24 if args.images is None else args.images
            folder = output / "samples"
            paths = generate(folder, count, seed=args.seed, size=args.sample_size)
            logger.info("generated %d sample images in %s", count, folder)
        # stream(), not run(): the saved paths are not kept in a list, and each
        # counts as delivered as it comes out, so a partial report (Ctrl-C)
        # counts the images already saved as successes.
        watching = {"trace": args.trace, "progress": args.progress}
        observers = observers_from(args)
        with pipeline, pipeline.stream(paths, observers=observers, **watching) as saved:
            for _ in saved:
                pass
        return saved.report

    def show(report: PipelineReport | None) -> None:
        lines = [
            f"thumbnails: {saver.thumbnails} ({saver.saved} written)",
            f"features:   {saver.csv_path}",
        ]
        if report is not None:
            lines += [
                f"dead letter: {Path(letter.item).name}: "
                f"{type(letter.exception).__name__}: {letter.exception}"
                for letter in report.dead_letters
            ]
            lines.append(report.summary())
        print("\n".join(lines))  # noqa: T201 (the report goes to stdout)

    return run_reporting(process_images, show)


@contextmanager
def _logging_to_stderr(level: int) -> Iterator[None]:
    # Log the example's lines to stderr for the duration of a run; undo it afterwards.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)

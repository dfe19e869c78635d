"""The `data:` and `augment:` sections: fastai's DataBlock vocabulary in snake_case YAML."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_serializer, model_validator

from imgcls.registry import did_you_mean
from imgcls.spec.base import (
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Probability,
    Size,
    StrictModel,
)
from imgcls.targets import TARGETS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# --- items --------------------------------------------------------------------------------------------


class FolderItems(StrictModel):
    """Image files under `data.path` (fastai's get_image_files)."""

    kind: Literal["folder"] = "folder"
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    recurse: bool = True
    # Only descend into these top-level sub-folders, e.g. [train, valid].
    folders: list[str] | None = None


class CsvItems(StrictModel):
    """One item per row of a CSV file; the image path is `prefix + row[path_col] + suffix`."""

    kind: Literal["csv"]
    csv: str
    path_col: str | int = 0
    prefix: str = ""
    suffix: str = ""


Items = Annotated[FolderItems | CsvItems, Field(discriminator="kind")]


# --- labels -------------------------------------------------------------------------------------------


class CaseTransform(StrictModel):
    """`lower`, `upper` or `strip` (str.lower, str.upper, str.strip) of the whole label."""

    kind: Literal["lower", "upper", "strip"]

    @model_serializer
    def _as_name(self) -> str:
        return self.kind


class ReplaceTransform(StrictModel):
    """`{replace: {from: to, ...}}`: every `from` text in the label becomes `to`, pairs in the order written."""

    kind: Literal["replace"]
    replace: dict[str, str]

    @field_validator("replace")
    @classmethod
    def _pairs(cls, pairs: dict[str, str]) -> dict[str, str]:
        if not pairs:
            raise ValueError("replace needs at least one 'from: to' pair, e.g. {replace: {'-': '_'}}")
        if "" in pairs:
            raise ValueError("replace cannot replace the empty text")
        return pairs

    @model_serializer
    def _as_mapping(self) -> dict[str, dict[str, str]]:
        return {"replace": dict(self.replace)}


def _transform_form(value: object) -> object:
    """`lower` -> {kind: lower}; `{replace: {...}}` -> {kind: replace, replace: {...}} (so that a misspelt name
    gets the did-you-mean error of a discriminated union)."""
    if isinstance(value, str):
        return {"kind": value}
    if isinstance(value, dict) and "kind" not in value and len(value) == 1:
        (name,) = value
        return {"kind": name, name: value[name]}
    return value


# The closed set of label transforms, applied in order to every label (each label of a multi-label list).
LabelTransform = Annotated[
    Annotated[CaseTransform | ReplaceTransform, Field(discriminator="kind")], BeforeValidator(_transform_form)
]


class ParentFolderLabel(StrictModel):
    """The name of the folder that holds the image (fastai's parent_label)."""

    kind: Literal["parent_folder"]
    transforms: list[LabelTransform] = Field(default_factory=list)


class RegexLabel(StrictModel):
    """Group 1 of a regular expression searched in the file name or the whole (posix) path."""

    kind: Literal["regex"]
    pattern: str
    # What the pattern is searched in. (Not called `on`: YAML 1.1 reads the key `on` as true.)
    source: Literal["name", "path"] = "name"
    transforms: list[LabelTransform] = Field(default_factory=list)

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from err
        if compiled.groups < 1:
            raise ValueError("the pattern needs a capture group, e.g. '^(.+)_\\d+\\.jpg$'")
        return pattern


class ColumnLabel(StrictModel):
    """A CSV column (or several, for regression), split on `delimiter` for multi-label."""

    kind: Literal["column"]
    column: str | int | list[str | int] = 1
    delimiter: str | None = None
    transforms: list[LabelTransform] = Field(default_factory=list)

    @model_validator(mode="after")
    def _text_only(self) -> ColumnLabel:
        if self.transforms and isinstance(self.column, list):
            raise ValueError("transforms apply to text labels; several columns are read as numbers (regression)")
        return self


class CallableLabel(StrictModel):
    """`package.module:function` or `path/to/file.py:function`, called with the image path (and CSV row)."""

    kind: Literal["callable"]
    function: str

    @field_validator("function")
    @classmethod
    def _has_colon(cls, function: str) -> str:
        if ":" not in function:
            raise ValueError("write it as 'package.module:function' or 'file.py:function'")
        return function


class PointFileLabel(StrictModel):
    """Pixel coordinates read from a text file next to each image: x y pairs, whitespace separated.

    The file name comes from the image name by a regex substitution (`find` -> `replace`).
    """

    kind: Literal["point_file"]
    find: str = r"\.[^.]+$"
    replace: str = ".txt"
    y_first: bool = False


Labels = Annotated[
    ParentFolderLabel | RegexLabel | ColumnLabel | CallableLabel | PointFileLabel,
    Field(discriminator="kind"),
]


# --- splits -------------------------------------------------------------------------------------------


class RandomSplit(StrictModel):
    """A fixed fraction of the items, drawn with a local generator seeded by `seed`."""

    kind: Literal["random"] = "random"
    valid_pct: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    seed: int = 42


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


NameList = Annotated[list[str], BeforeValidator(_as_list)]


class GrandparentSplit(StrictModel):
    """By the name of the grandparent folder: path/train/cat/1.jpg is in train."""

    kind: Literal["grandparent"]
    train: NameList = Field(default_factory=lambda: ["train"])
    valid: NameList = Field(default_factory=lambda: ["valid"])


class FolderNameSplit(StrictModel):
    """Validation = every image whose parent folder has one of these names (BIWI: person '13')."""

    kind: Literal["folder_name"]
    valid: NameList


class PathRegexSplit(StrictModel):
    """Validation = every image whose posix path relative to data.path matches `pattern` (re.search)."""

    kind: Literal["path_regex"]
    pattern: str


class ColumnSplit(StrictModel):
    """Validation = rows where a boolean CSV column is true (PASCAL's is_valid)."""

    kind: Literal["column"]
    column: str = "is_valid"


class FileSplit(StrictModel):
    """Validation = the items listed in a text file, one path (relative to data.path) per line."""

    kind: Literal["file"]
    file: str


Split = Annotated[
    RandomSplit | GrandparentSplit | FolderNameSplit | PathRegexSplit | ColumnSplit | FileSplit,
    Field(discriminator="kind"),
]


# --- item transforms (CPU, per image) -----------------------------------------------------------------

ResizeMethod = Literal["crop", "pad", "squish"]
PadMode = Literal["zeros", "border", "reflection"]


class ResizeTfm(StrictModel):
    """fastai's Resize: crop (random window on train, centre on valid), pad or squish."""

    kind: Literal["resize"] = "resize"
    size: Size
    method: ResizeMethod = "crop"
    pad_mode: PadMode = "reflection"


class RandomResizedCropTfm(StrictModel):
    """fastai's RandomResizedCrop: a random area and aspect on train; squish to size+xtra, centre crop on valid."""

    kind: Literal["random_resized_crop"]
    size: Size
    min_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.08
    max_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    ratio: tuple[PositiveFloat, PositiveFloat] = (3 / 4, 4 / 3)
    val_xtra: NonNegativeFloat = 0.14


ItemTfm = Annotated[ResizeTfm | RandomResizedCropTfm, Field(discriminator="kind")]


# --- normalization ------------------------------------------------------------------------------------


class NormStats(StrictModel):
    """Explicit per-channel statistics on the [0, 1] scale."""

    mean: list[float]
    std: list[Annotated[float, Field(gt=0.0)]]

    @model_validator(mode="after")
    def _same_length(self) -> NormStats:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        return self


# auto: ImageNet (or the pretrained model's) statistics when the model is pretrained, none otherwise.
# measure: the mean and std of augmented training batches (data.normalize_batches of them).
Normalize = Literal["auto", "imagenet", "none", "measure"] | NormStats


# --- the section ----------------------------------------------------------------------------------------


class DataSpec(StrictModel):
    """Where the items are, how they are labelled and split, and how each image is presized."""

    # A folder, `demo:<layout>` (generated on first use) or a folder that `url` is downloaded into.
    path: Annotated[str, Field(min_length=1)]
    url: str | None = None
    # [image, <target>]: the target is a name of imgcls.targets.TARGETS.
    blocks: list[str] = Field(default_factory=lambda: ["image", "category"])
    items: Items = Field(default_factory=FolderItems)
    labels: Labels = Field(default_factory=lambda: ParentFolderLabel(kind="parent_folder"))
    split: Split = Field(default_factory=RandomSplit)
    item_tfm: ItemTfm | None = None
    normalize: Normalize = "auto"
    normalize_batches: PositiveInt = 4
    bs: PositiveInt = 64
    val_bs: PositiveInt | None = None
    # Worker processes for decoding; `auto` = min(8, cpus) per training process, 0 = in the main process.
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    # error: stop (after saving a checkpoint) naming the file; skip: leave the file out and list it.
    on_bad_image: Literal["error", "skip"] = "error"
    # stream: decode every epoch; cache: keep presized images in a memory-mapped file; resident: keep the
    # presized dataset on the training device. auto picks resident when it fits, else stream.
    mode: Literal["auto", "stream", "cache", "resident"] = "auto"
    cache_dir: str | None = None
    # Where streamed JPEGs are decoded. pil: in the workers, with the item transform (the default). device:
    # workers only read the file bytes and plan each window; the batch is decoded on the training device
    # (nvjpeg on CUDA) and each window cut and resized there. Files that are not plain RGB JPEGs take the pil
    # path in their worker. Applies to data.mode stream (a resident dataset is presized once with PIL).
    decode: Literal["pil", "device"] = "pil"
    # random: a permutation per epoch; balanced: each epoch draws as many items as the training set has, with
    # replacement, every class equally likely (single-label targets).
    sampler: Literal["random", "balanced"] = "random"

    @field_validator("blocks")
    @classmethod
    def _two_blocks(cls, blocks: list[str]) -> list[str]:
        names = TARGETS.names()
        if len(blocks) != 2 or blocks[0] != "image":
            raise ValueError(f"blocks must be [image, <target>] with <target> one of {', '.join(names)}; got {blocks}")
        if blocks[1] not in TARGETS:
            raise ValueError(
                f"unknown target block '{blocks[1]}'{did_you_mean(blocks[1], names)}; valid targets: {', '.join(names)}"
            )
        return blocks

    @model_validator(mode="after")
    def _csv_needs(self) -> DataSpec:
        csv_only = {"column"}
        if self.items.kind != "csv":
            if self.labels.kind in csv_only:
                raise ValueError("labels.kind 'column' needs items.kind 'csv' (a column of a CSV file)")
            if self.split.kind in csv_only:
                raise ValueError("split.kind 'column' needs items.kind 'csv' (a boolean column)")
        return self

    @model_validator(mode="after")
    def _decode_needs_stream(self) -> DataSpec:
        if self.decode == "device" and self.mode == "cache":
            raise ValueError(
                "decode 'device' reads every file each epoch, so it cannot use the presize cache (mode 'cache', "
                "whose entries are presized by PIL): set mode: stream, or decode: pil"
            )
        return self

    @property
    def target(self) -> str:
        return self.blocks[1]


class TrivialAugmentPolicy(StrictModel):
    """torchvision's TrivialAugmentWide: per image, one op at a random one of 31 magnitude bins."""

    kind: Literal["trivial_augment"]


class RandAugmentPolicy(StrictModel):
    """torchvision's RandAugment: per image, n ops in turn, each at bin `magnitude` of 31 (timm's `rand-m9-n2`
    is the same idea on a 0..10 scale, with each op at p 0.5: its m9 is about magnitude 27 here)."""

    kind: Literal["rand_augment"]
    n: PositiveInt = 2
    magnitude: Annotated[int, Field(ge=0, le=30)] = 9


# A discriminated union, so that a misspelt kind gets the did-you-mean error with its file and line.
PolicySpec = Annotated[TrivialAugmentPolicy | RandAugmentPolicy, Field(discriminator="kind")]


class ErasingSpec(StrictModel):
    """timm's RandomErasing (--reprob, --remode, --recount), on the normalized batch: per image with
    probability p, 1..max_count rectangles of 2%..1/3 of the area (shared out between them), aspect 0.3..3.3."""

    p: Probability = 0.25
    # pixel: per-pixel N(0, 1) noise; rand: one N(0, 1) colour per rectangle and channel; const: 0.
    mode: Literal["pixel", "rand", "const"] = "pixel"
    max_count: PositiveInt = 1


class AugmentSpec(StrictModel):
    """fastai's aug_transforms, run as ONE fused sampling pass per batch on the training device, optionally
    with an augmentation policy and random erasing (training batches only; `enabled: false` turns all off)."""

    enabled: bool = True
    # Final size (height, width); unset keeps the item transform's size.
    size: Size | None = None
    mult: NonNegativeFloat = 1.0
    do_flip: bool = True
    flip_vert: bool = False
    max_rotate: NonNegativeFloat = 10.0
    min_zoom: PositiveFloat = 1.0
    max_zoom: PositiveFloat = 1.1
    max_lighting: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    max_warp: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    p_affine: Probability = 0.75
    p_lighting: Probability = 0.75
    # < 1 adds a random square crop of min_scale..1 of the area, per image, fused into the same pass.
    min_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    pad_mode: PadMode = "reflection"
    policy: PolicySpec | None = None
    erasing: ErasingSpec | None = None

    @model_validator(mode="after")
    def _zoom_order(self) -> AugmentSpec:
        if self.min_zoom > self.max_zoom:
            raise ValueError(f"min_zoom ({self.min_zoom}) is larger than max_zoom ({self.max_zoom})")
        return self

"""The index of a Rohde & Schwarz logo-challenge folder: which frame shows which logo where.

Two forms are read:

- `master.pkl` + `labels.pkl`, as the challenge shipped them: pickles of
  `lib.dataset_interface.Record` (`img_path`, `labels`) and `Label` (`name`, `pos=[x,y,w,h]`).
  A pickle can run any code on load, so `SafeUnpickler` resolves exactly those two names, to
  small local stand-ins (no `lib` package needed), and refuses every other global before
  anything is called. Plain containers need no global and load as usual.
- the raw folders: `<channel>/<folder>/*.jpg` with `metadata.txt` (`name,x,y,w,h` per line; every
  line applies to every frame of the folder) and `nologo/<split>/*.jpg`. The split is read from
  the folder name (`train-*`, `test-*`); folders named otherwise get a seeded 20 % held out,
  or are all test frames where the folder is only to be scored (`unsplit="test"`).

Label names are the challenge's own (`BR`, `mdrHD`, `sat1Gold-43`, ...); `channel_of` maps the
59 variants of the real challenge onto its 15 channels.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from minicaps.data.common import IMAGE_EXTS, holdout_mask
from minicaps.errors import MinicapsError

NOLOGO = "nologo"
CHANNELS = (
    "ard", "br", "hr", "kabel1", "kabel1doku", "mdr", "n24", "ndr",
    "prosieben", "prosiebenmaxx", "sat1", "sat1gold", "swr", "wdr", "zdf",
)
# Suffixes that mark a variant of one channel's logo: HD, the 4:3 version, BR's repeat marker.
VARIANT_SUFFIXES = ("hd", "43", "wiederholung")
# Programme overlays that ProSiebenSat.1 ran on several of its channels: the name alone does not
# say which channel; the frame's folder does, else their most frequent channel in the challenge.
OVERLAYS = {"livestrip": "prosieben", "susilive": "sat1"}
# The challenge's folder names (`11406-7max`, `11506-kabelDoku`) that are no label name.
FOLDER_ALIASES = {"7max": "prosiebenmaxx", "kabeldoku": "kabel1doku"}


def channel_of(label_name: str, folder: str | None = None) -> str:
    """The channel a label name (or folder name) belongs to, lowercase.

    `sat1Gold-43` -> `sat1gold`, `brHD_noHD` -> `br`, `swr43` -> `swr`, `10906-sat1` -> `sat1`.
    Names of different channels stay apart (`sat1gold` / `sat1`, `kabel1doku` / `kabel1`);
    an unknown name comes back normalised, not forced onto a known channel. `folder` (the
    first part of the frame's path) decides only for cross-channel overlays like `livestrip`.
    """
    name = re.sub(r"^\d+[-_]", "", label_name.strip().lower())  # drop a folder's numeric id
    name = re.split(r"[-_]", name)[0]  # drop `-43`, `-werbung`, `_noHD`, ...
    name = FOLDER_ALIASES.get(name, name)
    if name in OVERLAYS:
        return channel_of(folder) if folder else OVERLAYS[name]
    stripped = True
    while stripped and name not in CHANNELS:
        stripped = False
        for suffix in VARIANT_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name, stripped = name[: -len(suffix)], True
    return name


class Record:
    """Stand-in for `lib.dataset_interface.Record`: `img_path` (relative), `labels` (list)."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise TypeError("Record state is not a dict")
        self.img_path, self.labels = state.get("img_path"), state.get("labels", [])


class Label:
    """Stand-in for `lib.dataset_interface.Label`: `name` and `pos` = [x, y, w, h]."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise TypeError("Label state is not a dict")
        self.name, self.pos = state.get("name"), state.get("pos")


ALLOWED = {("lib.dataset_interface", "Record"): Record, ("lib.dataset_interface", "Label"): Label}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only Record and Label; any other global stops the load."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise MinicapsError(
            f"{self.path}: minicaps refuses to load {module}.{name} from this pickle (only "
            "lib.dataset_interface.Record/Label and plain containers are allowed)"
        )


def safe_load(path: Path):
    """Unpickle `path` with SafeUnpickler; any failure becomes a MinicapsError naming it."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, path).load()
    except MinicapsError:
        raise
    except Exception as e:  # untrusted bytes: any error the unpickler raises means "bad file"
        raise MinicapsError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


@dataclass
class Frame:
    path: Path  # the image file
    split: str  # "train" or "test"
    logos: list = field(default_factory=list)  # [(class name, (x, y, w, h))]; empty: no logo


def _split_of(name: str) -> str | None:
    name = name.lower()
    return "train" if name.startswith("train") else "test" if name.startswith("test") else None


def _class_name(name: str, folder: str, merge: bool) -> str:
    return channel_of(name, folder) if merge else name


def _box(pos, where) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in pos)
    except (TypeError, ValueError):
        raise MinicapsError(f"{where}: logo box {pos!r} is not four numbers x,y,w,h") from None
    return x, y, w, h


def _from_master(root: Path, merge: bool) -> list[Frame]:
    master = safe_load(root / "master.pkl")
    if not isinstance(master, dict) or not {"train", "test"} <= set(master):
        raise MinicapsError(f"{root / 'master.pkl'}: expected a dict with 'train' and 'test' lists")
    frames = []
    for split in ("train", "test"):
        for r in master[split]:
            rel = getattr(r, "img_path", None)
            if not isinstance(r, Record) or not isinstance(rel, str) or not isinstance(r.labels, list):
                raise MinicapsError(f"{root / 'master.pkl'}: a {split} entry is not a Record with img_path and labels")
            parts = PurePosixPath(rel).parts
            if PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
                raise MinicapsError(f"{root / 'master.pkl'}: image path {rel!r} leaves the data folder")
            logos = []
            for lab in r.labels:
                if not isinstance(lab, Label) or not isinstance(lab.name, str):
                    raise MinicapsError(f"{root / 'master.pkl'}: a label of {rel} is not a Label with a name")
                if lab.name != NOLOGO:
                    logos.append((_class_name(lab.name, parts[0], merge), _box(lab.pos, f"{rel}")))
            frames.append(Frame(root / rel, split, logos))
    return frames


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _from_folders(root: Path, merge: bool, unsplit: str) -> list[Frame]:
    frames = []
    for meta in sorted(root.rglob("metadata.txt")):
        logos = []
        for n, line in enumerate(meta.read_text(errors="replace").splitlines(), 1):
            if line.strip():
                name, *pos = (v.strip() for v in line.split(","))
                if len(pos) != 4:
                    raise MinicapsError(f"{meta}:{n}: expected name,x,y,w,h, got {line!r}")
                folder = meta.relative_to(root).parts[0]
                logos.append((_class_name(name, folder, merge), _box(pos, f"{meta}:{n}")))
        for p in _images_in(meta.parent):
            frames.append(Frame(p, _split_of(meta.parent.name), logos))
    nologo = root / NOLOGO
    if nologo.is_dir():
        for d in sorted({p.parent for p in nologo.rglob("*") if p.suffix.lower() in IMAGE_EXTS}):
            frames += [Frame(p, _split_of(d.name), []) for p in _images_in(d)]
    pending = [f for f in frames if f.split is None]
    if pending and unsplit == "test":  # frames to score, not to learn from
        for f in pending:
            f.split = "test"
    elif pending:  # no split in the folder name: hold out a seeded 20 % per class
        names = [f.logos[0][0] if f.logos else NOLOGO for f in pending]
        ids = {n: k for k, n in enumerate(sorted(set(names)))}
        for f, is_test in zip(pending, holdout_mask([ids[n] for n in names])):
            f.split = "test" if is_test else "train"
    return frames


def read_index(root: str | Path, merge_variants: bool = True,
               unsplit: str = "holdout") -> tuple[list[Frame], list[str]]:
    """All frames of the data folder and the class names (channels, then "nologo" last).

    With labels.pkl the class order follows its indices; otherwise names sort alphabetically.
    Frames in folders named for no split: a seeded 20 % of each class held out as test
    frames (`unsplit="holdout"`), or all of them test frames (`"test"`).
    """
    root = Path(root)
    if unsplit not in ("holdout", "test"):
        raise ValueError(f"unsplit must be 'holdout' or 'test', not {unsplit!r}")
    if (root / "master.pkl").is_file():
        frames = _from_master(root, merge_variants)
    else:
        frames = _from_folders(root, merge_variants, unsplit)
    if not frames:
        raise MinicapsError(f"{root}: no frames found (expected master.pkl or <channel>/<folder>/metadata.txt)")
    order = {}
    if (root / "labels.pkl").is_file():
        index = safe_load(root / "labels.pkl")
        if not isinstance(index, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in index.items()):
            raise MinicapsError(f"{root / 'labels.pkl'}: expected a dict of label name -> class index")
        for name, k in index.items():
            c = _class_name(name, "", merge_variants)
            order[c] = min(order.get(c, k), k)
    seen = {c for f in frames for c, _ in f.logos} - {NOLOGO}
    classes = sorted(set(order) | seen, key=lambda c: (order.get(c, float("inf")), c))
    return frames, [c for c in classes if c != NOLOGO] + [NOLOGO]

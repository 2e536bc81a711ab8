"""One line when an image folder looks labeled but is read otherwise, with the layout that would
make it labeled (image_folder.scan decides the layout; this only explains the near misses)."""

from __future__ import annotations

import sys
from pathlib import Path

LABELED = "root/<class>/... (two or more classes), or root/train/<class>/ + root/val/<class>/"


def layout_note(root: Path, layout: str, classes: list[str] | None, top_images: list[Path],
                dirs: list[Path]) -> str | None:
    """Why `root` (read as `layout`) is not the labeled folder it resembles, or None."""
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_train != has_val:
        present, absent = ("train", "val") if has_train else ("val", "train")
        read_as = (f"so {present}/ is read as one of the classes {', '.join(classes)}" if layout == "classes"
                   else "so it is read as unlabeled")
        return f"{root}: has {present}/ but no {absent}/, {read_as}; a labeled layout is {LABELED}"
    if layout == "classes" and {"train", "val"} <= set(classes):
        return (f"{root}: train/ and val/ hold images but no class folders, so they are read as classes "
                f"themselves; a labeled layout is {LABELED}")
    if layout != "unlabeled":
        return None
    if top_images and dirs:
        return (f"{root}: {len(top_images)} image(s) at the top level (e.g. {top_images[0].name}) beside "
                f"{len(dirs)} folder(s), so it is read as unlabeled; move them into class folders for {LABELED}")
    if len(dirs) == 1 and not top_images:
        return (f"{root}: a single class folder ({dirs[0].name}/), so it is read as unlabeled; a labeled layout "
                f"is {LABELED}")
    return None


def announce(note: str | None) -> None:
    if note:
        print(f"unmasked: note: {note}", file=sys.stderr)

"""Data sets by name: `build_source("pascal", "/data/VOC2012", use_sbd=True)`.

Sources are imported on first use, so naming one never imports the others (pycocotools etc.).
"""
from __future__ import annotations

import inspect
from pathlib import Path

from sgone.data.episode import Source
from sgone.errors import SgoneError
from sgone.lazy import lookup

# name -> "module:class"
SOURCES: dict[str, str] = {
    "pascal": "sgone.data.pascal:PascalSource",
    "coco": "sgone.data.coco:CocoSource",
    "fss": "sgone.data.fss:FssSource",
    "folder": "sgone.data.folder:FolderSource",
    "voclike": "sgone.data.folder:VocLikeSource",
    "mix": "sgone.data.mix:MixSource",
    "synthetic": "sgone.data.synthetic:SyntheticSource",
    "davis2016": "sgone.data.davis:DavisSource",
}
# sources that make their own data and need no root
ROOT_OPTIONAL = {"synthetic"}


def source_class(name: str) -> type[Source]:
    return lookup(SOURCES, name, "data set")


def build_source(name: str, root: str | Path | None = None, **options) -> Source:
    """Build the named source over `root`; options go to its constructor.

    Options the source does not take are an error, except `strict` (collect problems instead
    of raising), which is dropped for sources without it.
    """
    cls = source_class(name)
    if root is None and name not in ROOT_OPTIONAL:
        raise SgoneError(f"data set '{name}' needs a root folder (--root PATH)")
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "strict" in options and "strict" not in params and not takes_any:
        options.pop("strict")
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown:
        known = [k for k in params if k not in ("self", "root")]
        raise SgoneError(f"data set '{name}' has no option {', '.join(unknown)} (options: {', '.join(known)})")
    return cls(root=root, **options) if "root" in params else cls(**options)

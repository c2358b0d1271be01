"""menpo LJSON landmark files (v1-v3): their point groups, each put in iBUG-68 order when its labels say so.

An LJSON group may store its 68 points grouped by label in any order (menpo3d's ``james.ljson`` stores chin,
leye, reye, leyebrow, nose, reyebrow, mouth: its points 17-22 are an eye, not a brow). The labels' masks say
which stored points form each part; `ibug68_order` turns them into the iBUG order (jaw 0-16, brows 17-26, nose
27-35, eyes 36-47, mouth 48-67). menpo names the parts from the image's side: "left" is the subject's right
(iBUG 17-21 and 36-41), as in its ``ibug_face_68`` labels.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["ibug68_order", "read_ljson_groups"]

# iBUG-68 parts in index order: (accepted label names, lower-case without "_" / " " / "-"), point count
_PARTS = (({"jaw", "chin"}, 17), ({"lefteyebrow", "leyebrow"}, 5), ({"righteyebrow", "reyebrow"}, 5),
          ({"nose"}, 9), ({"lefteye", "leye"}, 6), ({"righteye", "reye"}, 6), ({"mouth"}, 20))
_NAMES = set().union(*(names for names, _ in _PARTS))


def _key(label) -> str:
    return "".join(ch for ch in str(label).lower() if ch not in "_ -")


def ibug68_order(labels, n_points: int, path) -> np.ndarray | None:
    """The stored-point index of each iBUG-68 point, from an LJSON group's labels.

    Args:
        labels: the group's ``labels`` list ({"label": str, "mask": [int, ...]}), or None.
        n_points: how many points the group stores; path: the file (for error messages).
    Returns:
        (68,) int64 order (``points[order]`` is in iBUG order), or None when the group does not hold 68 points
        or its labels name no iBUG part (the stored order is then used as it is).
    Raises:
        InputError naming the file when the labels name iBUG parts but do not describe all 68 points.
    """
    if not isinstance(labels, list) or n_points != 68:
        return None
    masks = {}
    for lab in labels:
        if isinstance(lab, dict) and _key(lab.get("label")) in _NAMES:
            masks[_key(lab.get("label"))] = lab.get("mask")
    if not masks:
        return None
    order = []
    for names, count in _PARTS:
        found = [masks[k] for k in names if k in masks]
        mask = found[0] if found else None
        if not isinstance(mask, list) or len(mask) != count or not all(isinstance(i, int) for i in mask):
            raise InputError(f"landmark file {str(path)!r}: its labels name iBUG-68 parts but part "
                             f"{sorted(names)[0]!r} is {'missing' if mask is None else 'not %d point indices' % count}"
                             f" (labels: {[lab.get('label') for lab in labels if isinstance(lab, dict)]})")
        order += mask
    order = np.asarray(order, np.int64)
    if sorted(order.tolist()) != list(range(68)):
        raise InputError(f"landmark file {str(path)!r}: the iBUG-68 labels' masks are not a permutation of the "
                         "group's 68 points")
    return order


def read_ljson_groups(path) -> list:
    """The point lists of every landmark group of a menpo LJSON file, each in iBUG order where labelled.

    Returns:
        list of point lists (each point a list of 2 or 3 numbers, or None / a list with None when missing), in
        file order: v3 ``groups``, then a v1/v2 top-level ``landmarks`` group.
    Raises:
        FileNotFoundError; InputError naming the file when it is not JSON, a point is not a list of numbers, or
        its labels are inconsistent.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"landmark file not found: {p}")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"landmark file {str(p)!r}: not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        return []
    groups = [g for g in d["groups"].values() if isinstance(g, dict)] if isinstance(d.get("groups"), dict) else []
    if isinstance(d.get("landmarks"), dict):
        groups.append({"landmarks": d["landmarks"], "labels": d.get("labels")})
    out = []
    for g in groups:
        lm = g.get("landmarks")
        pts = lm.get("points") if isinstance(lm, dict) else None
        if not isinstance(pts, list):
            continue
        for i, q in enumerate(pts):
            if not (q is None or (isinstance(q, list) and all(x is None or (isinstance(x, (int, float))
                                                                           and not isinstance(x, bool)) for x in q))):
                raise InputError(f"landmark file {str(p)!r}: point {i} of a group is {q!r}, not a list of numbers "
                                 "(or null)")
        order = ibug68_order(g.get("labels"), len(pts), p)
        out.append(pts if order is None else [pts[i] for i in order])
    return out

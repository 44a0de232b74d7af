"""Small synthetic schools in the plain YAML format, for integration and property tests."""

from __future__ import annotations

import random
from typing import Any

FIRST = ["Léa", "Hugo", "Chloé", "Lucas", "Inès", "Nathan", "Zoé", "Adam", "Manon", "Noé"]
LAST = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy", "Moreau", "Haddad"]


def school(uai: str, *, classes: int = 3, pupils: int = 12, teachers: int = 3, seed: int = 1) -> dict[str, Any]:
    rnd = random.Random(seed)
    codes = [f"C{i}" for i in range(classes)]
    data: dict[str, Any] = {
        "schools": [{"uai": uai, "name": f"École {uai}"}],
        "classes": [{"code": c, "label": c, "level": "CM1"} for c in codes],
        "staff": [], "guardians": [], "pupils": [],
    }
    for t in range(teachers):
        data["staff"].append({"id": f"{uai}-t{t}", "first_name": rnd.choice(FIRST), "last_name": f"Prof{t}{uai[-3:]}",
                              "classes": sorted(set(rnd.sample(codes, k=min(2, classes)))),
                              "director": t == 0})
    g = 0
    for p in range(pupils):
        guardians = []
        for _ in range(rnd.choice([1, 2, 2])):
            if g and rnd.random() < 0.2:  # a sibling: shares an existing guardian
                guardians.append(f"{uai}-g{rnd.randrange(g)}")
            else:
                data["guardians"].append({"id": f"{uai}-g{g}", "first_name": rnd.choice(FIRST),
                                          "last_name": f"Parent{g}{uai[-3:]}"})
                guardians.append(f"{uai}-g{g}")
                g += 1
        data["pupils"].append({"id": f"{uai}-p{p}", "first_name": rnd.choice(FIRST), "last_name": rnd.choice(LAST),
                               "classes": [rnd.choice(codes)], "guardians": sorted(set(guardians))})
    return data

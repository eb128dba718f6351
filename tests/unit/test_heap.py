"""settle_heap: what exists is frozen, the youngest generation is collected less often,
and garbage made afterwards is still collected (in a child process: the change is process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import gc, json, weakref
from inference_club.heap import YOUNG_THRESHOLD, settle_heap

class Node:
    pass

before = gc.get_threshold()
settle_heap()
frozen = gc.get_freeze_count()
a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after startup
gone = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen,
                  "young": YOUNG_THRESHOLD, "cycle_collected": gone() is None}))
"""


def test_settle_heap_freezes_startup_and_still_collects_later_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True, text=True)
    facts = json.loads(out.stdout)
    assert facts["frozen"] > 1000  # the imported modules and what they hold
    assert facts["after"][0] == max(facts["young"], facts["before"][0])
    assert facts["after"][1:] == facts["before"][1:]
    assert facts["cycle_collected"]

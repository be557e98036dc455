"""Table-driven bad-input tests: one :class:`Bad` row per input a public function must refuse.

Each row names the call, the error type it must raise and the key words its message must hold (the
tensor or argument, the rule, what was found). ``check(row)`` runs one row; a test file parametrizes over
its table with ``ids=ids``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Bad:
    """``call()`` must raise ``error`` with every string of ``words`` in its message."""

    id: str
    call: Callable[[], object]
    error: type
    words: Sequence[str]


def check(row: Bad) -> BaseException:
    with pytest.raises(row.error) as info:
        row.call()
    msg = str(info.value)
    missing = [w for w in row.words if w not in msg]
    assert not missing, f"{row.id}: message lacks {missing}: {msg}"
    # one line: the rule and the input, not a dump (a multi-line message is split on purpose only by
    # ReportError, which the CLI joins)
    assert not re.search(r"Traceback|tensor\(\[", msg), f"{row.id}: message dumps data: {msg[:200]}"
    return info.value


def ids(row: Bad) -> str:
    return row.id

from pathlib import Path

import pytest

from vidshard.engine.merger import OrderedMerger
from vidshard.errors import MediaError


def test_releases_in_order_whatever_the_arrival_order():
    merger = OrderedMerger(4)
    for position in (2, 0, 3, 1):
        merger.add(position, Path(f"p{position}"))
    assert merger.ordered() == [Path("p0"), Path("p1"), Path("p2"), Path("p3")]


def test_names_missing_pieces():
    merger = OrderedMerger(3)
    merger.add(1, Path("b"))
    assert merger.missing == [0, 2]
    with pytest.raises(MediaError, match=r"\[0, 2\]"):
        merger.ordered()


@pytest.mark.parametrize("position", [-1, 3])  # before the first, after the last
def test_rejects_out_of_range(position):
    with pytest.raises(IndexError):
        OrderedMerger(3).add(position, Path("x"))


def test_same_piece_twice_is_idempotent_but_not_a_different_file():
    merger = OrderedMerger(1)
    merger.add(0, Path("a"))
    merger.add(0, Path("a"))  # a retried unit reporting the same file
    with pytest.raises(MediaError):
        merger.add(0, Path("b"))

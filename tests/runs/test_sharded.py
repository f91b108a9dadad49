"""Who does what in a run over several processes: shares of images and locations."""
import pytest

from gpuksvd.runs import ConfigError
from gpuksvd.runs.sharded import batch_shares, check_locations, share


@pytest.mark.parametrize("n", [0, 1, 5, 64, 65])
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_shares_cover_everything_in_order_and_differ_by_at_most_one(n, parts):
    blocks = [share(n, parts, index) for index in range(parts)]
    assert [i for block in blocks for i in block] == list(range(n))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_image_shares_are_whole_batches_in_order():
    # 24 images in batches of 5: batches [0,5) [5,10) [10,15) [15,20) [20,24) -> 2, 2, 1 of them
    assert batch_shares(24, 5, 3) == [range(0, 10), range(10, 20), range(20, 24)]
    assert batch_shares(24, 32, 2) == [range(0, 24), range(24, 24)]  # one batch: the others get none
    for n, size, parts in ((100, 8, 3), (7, 3, 4), (33, 32, 2)):
        blocks = batch_shares(n, size, parts)
        assert [i for block in blocks for i in block] == list(range(n))
        assert all(block.start % size == 0 for block in blocks if len(block))


def test_more_processes_than_locations_is_refused_with_what_to_do():
    check_locations([(128, 2, 2)], ["layer4"], 4)
    with pytest.raises(ConfigError, match=r"'layer4' has 4 locations \(2x2\) for 5 processes.*at most 4 processes"):
        check_locations([(256, 8, 8), (128, 2, 2)], ["layer2", "layer4"], 5)

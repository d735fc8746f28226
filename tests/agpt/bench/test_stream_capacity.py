"""The SLO capacity of a sweep: the highest load that holds, and the highest below any miss."""

from agpt.bench.stream import slo_capacities


def _point(rate: float, holds: bool) -> dict[str, object]:
    return {"sent_frames_per_s": rate, "holds": holds}


def test_a_miss_below_a_holding_load_is_reported_not_hidden() -> None:
    sweep = [_point(6.0, True), _point(7.0, False), _point(7.5, True), _point(8.0, False)]

    assert slo_capacities(sweep) == (7.5, 6.0)


def test_nothing_holds_means_no_capacity() -> None:
    assert slo_capacities([_point(6.0, False), _point(7.0, False)]) == (0.0, 0.0)
    assert slo_capacities([]) == (0.0, 0.0)


def test_every_load_holding_gives_the_same_two_figures() -> None:
    assert slo_capacities([_point(6.0, True), _point(7.0, True)]) == (7.0, 7.0)

"""The step split's summary and reading (post/speed.py), on epoch lines of known timings."""

from oasis_dcgan.post import speed


def epoch(compute, allreduce, wait_input):
    return {"kind": "epoch", "step_split": {"compute_ms": compute, "allreduce_ms": allreduce, "input_ms": wait_input}}


def test_the_first_epoch_which_traces_is_left_out_and_the_median_taken():
    epochs = [epoch(900.0, 0.0, 0.0), epoch(10.0, 1.0, 0.0), epoch(12.0, 2.5, 0.0), epoch(11.0, 2.0, 0.5)]
    s = speed.step_split(epochs, 2, False)
    assert (s["compute_ms"], s["allreduce_ms"], s["input_ms"], s["epochs"]) == (11.0, 2.0, 0.0, 3)
    assert abs(sum(s["shares"].values()) - 1) < 1e-9 and s["reading"].startswith("bound by computation")
    assert speed.step_split([epoch(5.0, 1.0, 0.0)], 2, False)["compute_ms"] == 5.0, "one epoch: its own"


def test_each_bound_is_named_with_its_lever():
    assert speed.step_split([epoch(5, 1, 4)] * 2, 4, False)["reading"].startswith("bound by input: 40%")
    comm = speed.step_split([epoch(6, 4, 0)] * 2, 4, False)["reading"]
    assert comm.startswith("bound by communication: 40%") and "train.fp16_allreduce = true" in comm
    assert "already travel in fp16" in speed.step_split([epoch(6, 4, 0)] * 2, 4, True)["reading"]
    assert "one rank, no allreduce" in speed.step_split([epoch(6, 0, 0)] * 2, 1, False)["reading"]


def test_a_run_that_recorded_no_split_says_so():
    assert speed.step_split([{"kind": "epoch", "step_time": 0.1}], 1, False) is None
    assert speed.step_split([epoch(0.0, 0.0, 0.0)], 1, False) is None, "train.step_split off: zeros"
    assert speed.row(None)[-1] == "not recorded"


def test_a_bound_is_claimed_only_where_every_epoch_shows_it():
    mixed = [epoch(5, 0, 0), epoch(5, 1, 4), epoch(5, 1, 0.1), epoch(5, 1, 0.2)]
    said = speed.step_split(mixed, 2, False)["reading"]
    assert said.startswith("undetermined: the epochs disagree") and "bound by input" in said, said

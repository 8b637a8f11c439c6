"""A leaderboard row's cost, from a run's stats.jsonl lines (post/leaderboard.py)."""

from oasis_dcgan.post import leaderboard


def test_cost_counts_every_attempt_from_its_first_record_to_its_last_and_not_the_gap_between():
    stats = [{"kind": "tick", "time": 100.0}, {"kind": "epoch", "time": 110.0, "epoch_time": 9.0, "images": 80},
             {"kind": "checkpoint", "time": 112.0},  # a stop: the epoch after it was cut short
             {"kind": "resume", "time": 200.0},      # requeued: the wait in the queue is nobody's rank-time
             {"kind": "epoch", "time": 209.0, "epoch_time": 8.0, "images": 80}]
    c = leaderboard.cost({"world_size": 4}, stats)
    assert c["attempts"] == 2 and c["wall_s"] == 12.0 + 9.0
    assert c["gpu_hours"] == 4 * 21.0 / 3600 and c["images_per_s"] == 160 / 17.0
    assert leaderboard.cost({}, [])["images_per_s"] is None

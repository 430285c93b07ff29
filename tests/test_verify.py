"""`imgpipe verify`'s comparison of a rerun with the committed metrics and dvc.lock."""

from __future__ import annotations

from imgpipe.pipeline.verify import lock_differences, metric_differences


def test_metric_differences_name_the_key_and_both_values_and_skip_machine_speed() -> None:
    committed = {"accuracy": 0.91, "per_class": [{"f1": 0.5}], "wall_time_s": 100.0, "images_per_second": 3000}
    rerun = {"accuracy": 0.92, "per_class": [{"f1": 0.5}], "wall_time_s": 90.0, "images_per_second": 3300}
    assert metric_differences("metrics/evaluate/cnn.json", committed, rerun) == [
        "metrics/evaluate/cnn.json: accuracy was 0.91, now 0.92"]
    assert metric_differences("m.json", committed, committed) == []
    assert metric_differences("m.json", {"a": 1}, {}) == ["m.json: a was 1, now '(absent)'"]


def test_lock_differences_compare_only_deterministic_outputs() -> None:
    def lock(predictions: str, model: str) -> dict:
        return {"stages": {"evaluate@cnn": {"outs": [{"path": "data/predictions/cnn.npy", "md5": predictions}]},
                           "train@cnn": {"outs": [{"path": "models/cnn.keras", "md5": model}]}}}

    assert lock_differences(lock("aa", "m1"), lock("aa", "m2")) == []     # a .keras zip carries its save time
    assert lock_differences(lock("aa", "m1"), lock("bb", "m1")) == [
        "dvc.lock: data/predictions/cnn.npy had md5 aa, now bb"]

"""The load-ramp figures the cluster test and benchmarks/serve_cluster.py report (mycolens.serving.loadgen)."""

from mycolens.serving.loadgen import Answer, Ramp, answered_per_second, ramp_figures


def ramp() -> Ramp:
    """1 then 4 clients for 10 s each from t=100, then 1 client until t=130; replicas 1 -> 3 at t=112 -> 1 at t=126."""
    replicas = [(100.0 + t, 1) for t in range(12)] + [(112.0 + t, 3) for t in range(14)] + [(126.0, 1), (127.0, 1)]
    answers = [Answer(100.0 + t / 2, 0.4, "200") for t in range(60)]  # 2 answers/s for 30 s
    answers += [Answer(110.0 + t / 10, 0.05, "200") for t in range(100)]  # 10 more a second during the top step
    answers += [Answer(121.0, 0.1, "503"), Answer(105.0, 0.2, "ReadTimeout()")]
    steps = [(100.0, 1), (110.0, 4), (120.0, 1)]
    return Ramp(t0=100.0, top_ended=120.0, end=130.0, steps=steps, replicas=replicas, answers=answers)


def test_ramp_figures_time_the_scaling_and_count_failures_by_phase() -> None:
    figures = ramp_figures(ramp(), min_replicas=1)
    assert figures["clients"] == [1, 4, 1]
    assert figures["scale_up_s"] == 12.0 and figures["peak_replicas"] == 3
    assert figures["scale_down_s"] == 6.0  # first sample back at 1 replica after the top step ended
    assert figures["requests"] == 162 and figures["failed"] == 2
    assert figures["failed_while_scaling_up"] == 1 and figures["failed_while_scaling_down"] == 1
    assert figures["failures"] == ["503", "ReadTimeout()"]
    # top step 110..120 s: 10 answers/s from the 4 clients + the 1-client stream's 2/s, over ~1.6 replicas
    assert figures["top_step_answers_per_s"] == 12.0
    assert figures["answers_per_s_per_replica"] == round(12.0 / ((2 * 1 + 8 * 3) / 10), 1)


def test_answers_per_second_counts_successes_by_finish_time() -> None:
    answers = [Answer(0.2, 0.5, "200"), Answer(0.9, 0.5, "200"), Answer(1.5, 0.1, "500"), Answer(2.9, 0.05, "200")]
    assert answered_per_second(answers, 0.0, 3) == [1, 1, 1]
    assert answered_per_second(answers, 0.0, 2) == [1, 1]  # the last one finished after the window

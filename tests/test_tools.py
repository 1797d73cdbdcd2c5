"""bench, plan and gradcheck through the CLI, on tiny configurations (never timings)."""
import json

from click.testing import CliRunner

from minicaps.cli.main import main

TINY = ["--in-shape", "1,12,12", "--n-classes", "3", "--conv-channels", "4",
        "--kernel-size", "3", "--primary-types", "2", "--primary-dim", "4", "--class-dim", "5"]


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_bench_json_ends_with_the_numbers():
    result = run("bench", *TINY, "--batch-size", "4", "--steps", "2", "--warmup", "1", "--json")
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.output.strip().splitlines()[-1])
    for key in ("images_per_s", "step_s_median", "peak_mem_bytes", "gflops"):
        assert numbers[key] > 0, key
    assert numbers["batch_size"] == 4


def test_plan_counts_the_papers_network():
    result = run("plan", "--json")
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.output.strip().splitlines()[-1])
    assert numbers["n_params"] == 8_215_568
    assert "8,215,568" in result.output
    for key in ("step_s", "images_per_s", "gemm_gflops", "copy_gbs", "update_gbs"):
        assert 0 < numbers[key] < float("inf"), key


def test_plan_refuses_what_cannot_fit():
    result = run("plan", "--in-shape", "3,405,720", "--n-classes", "59", "--batch-size", "64")
    assert result.exit_code == 1
    assert "does not fit" in result.output


def test_gradcheck_passes_on_a_correct_network():
    result = run("gradcheck", *TINY, "--entries", "3")
    assert result.exit_code == 0, result.output
    assert "pass" in result.output and "caps.w" in result.output


def test_gradcheck_fails_on_a_broken_backward(monkeypatch):
    from minicaps.fast import dispatch
    real = dispatch.routing_backward
    monkeypatch.setattr(dispatch, "routing_backward", lambda dv, cache: 1.05 * real(dv, cache))
    result = run("gradcheck", *TINY, "--entries", "3")
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_bad_shape_is_one_clear_line():
    result = run("plan", "--in-shape", "28,28")
    assert result.exit_code == 2
    assert "C,H,W" in result.output and "Traceback" not in result.output

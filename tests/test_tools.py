"""bench and plan through the CLI, on tiny configurations (never timings); gradcheck has
tests/test_gradcheck.py."""
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


def test_bad_shape_is_one_clear_line():
    result = run("plan", "--in-shape", "28,28")
    assert result.exit_code == 2
    assert "C,H,W" in result.output and "Traceback" not in result.output


def test_bench_and_plan_know_the_em_network_and_its_options():
    em = ["--model", "em", "--in-shape", "1,20,20", "--n-classes", "3", "--em-conv-channels",
          "8", "--em-primary-types", "2", "--em-caps-types", "4,4"]
    planned = run("plan", *em, "--batch-size", "4", "--json")
    assert planned.exit_code == 0, planned.output
    plan_numbers = json.loads(planned.output.strip().splitlines()[-1])
    benched = run("bench", *em, "--batch-size", "4", "--steps", "2", "--warmup", "1", "--json")
    assert benched.exit_code == 0, benched.output
    bench_numbers = json.loads(benched.output.strip().splitlines()[-1])
    assert plan_numbers["n_params"] == bench_numbers["n_params"]
    assert bench_numbers["predicted_mem_bytes"] == plan_numbers["step_bytes"]
    # one more EM iteration: more memory and more arithmetic, planned
    deeper = run("plan", *em, "--batch-size", "4", "--em-routing-iters", "3", "--json")
    deeper_numbers = json.loads(deeper.output.strip().splitlines()[-1])
    assert deeper_numbers["step_bytes"] > plan_numbers["step_bytes"]
    assert deeper_numbers["flops_train"] > plan_numbers["flops_train"]


def test_an_option_of_another_network_kind_is_refused_by_name():
    for args, refused in [(["plan", "--model", "em", "--conv-channels", "8"], "--conv-channels"),
                          (["plan", "--em-routing-iters", "3"], "--em-routing-iters"),
                          (["bench", "--model", "cnn", "--em-caps-kernel", "5"],
                           "--em-caps-kernel"),
                          (["plan", "--em-own-class-transforms"], "--em-own-class-transforms")]:
        result = run(*args)
        assert result.exit_code == 1, args
        assert f"{refused}: not an option of --model" in result.output

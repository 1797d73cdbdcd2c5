"""One source of truth for the options: each declared once (minicaps/option.py), the
command line built from the declarations, and the data's presets applied by the library,
so that `minicaps train` and `run(TrainConfig(...))` train the same network."""
import dataclasses

import numpy as np
import pytest

from minicaps import CapsNetConfig
from minicaps.errors import MinicapsError
from minicaps.nets.cnn import CNNConfig
from minicaps.option import declared, option_name
from minicaps.training import checkpoint, loop as train
from minicaps.training.config import TrainConfig
from minicaps.training.presets import RS_DEFAULTS, SAMPLE_DEFAULTS

from test_cli import invoke
from test_data import make_raw_rs


def train_both_ways(tmp_path, data_args, **library_options):
    """One epoch trained by `minicaps train` (only `data_args` and --epochs 1 given) and
    one by train.run(TrainConfig(...)) from the same options: their checkpoints."""
    result = invoke("train", *data_args, "--epochs", 1, "--out", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    train.run(TrainConfig(epochs=1, out=str(tmp_path / "library"), **library_options))
    cli, library = (checkpoint.load(tmp_path / way / "last.npz") for way in ("cli", "library"))
    assert cli.model_config == library.model_config
    assert cli.classes == library.classes and cli.data_info == library.data_info
    assert {**cli.train_config, "out": ""} == {**library.train_config, "out": ""}
    for name, p in cli.params.items():  # the same weights after the same steps
        assert np.array_equal(p, library.params[name]), name
    return cli


def test_the_cli_and_the_library_train_the_same_network_on_the_bundled_sample(tmp_path):
    ckpt = train_both_ways(tmp_path, ["--limit", 40], limit=40)
    assert ckpt.model_config.conv_channels == SAMPLE_DEFAULTS["conv_channels"]
    assert ckpt.model_config.primary_types == SAMPLE_DEFAULTS["primary_types"]


def test_the_cli_and_the_library_train_the_same_network_on_rs_frames(tmp_path):
    root = make_raw_rs(tmp_path / "logos")
    ckpt = train_both_ways(tmp_path, ["--data", root], data=root)
    mc, stored = ckpt.model_config, ckpt.train_config
    for name in ("conv_channels", "conv_stride", "primary_types", "contrast_window",
                 "reconstruction"):
        assert getattr(mc, name) == RS_DEFAULTS[name], name
    assert mc.input_mean is not None  # standardised, as the preset says
    for name in ("lr", "batch_size", "nologo_ratio", "background_swap", "average_epochs"):
        assert stored[name] == RS_DEFAULTS[name], name
    assert ckpt.data_info["crop"]["width"] == 192 and mc.in_shape == (3, 72, 144)


def test_a_given_option_wins_over_the_preset_even_at_the_general_default(tmp_path):
    root = make_raw_rs(tmp_path / "logos")
    config = TrainConfig(data=root, epochs=8, reconstruction=True, nologo_ratio=None)
    assert (config.epochs, config.reconstruction, config.nologo_ratio) == (8, True, None)
    assert config.lr == RS_DEFAULTS["lr"] and config.data == str(root.resolve())
    assert TrainConfig().conv_channels == SAMPLE_DEFAULTS["conv_channels"]
    assert TrainConfig(data="not-there").conv_channels == CapsNetConfig().conv_channels
    again = TrainConfig.from_json(config.to_json())  # a stored config is kept as it is
    assert again == config and again.nologo_ratio is None


def test_the_em_network_has_its_own_learning_rate_unless_one_is_given(tmp_path):
    from minicaps.training.presets import MODEL_DEFAULTS
    assert TrainConfig(model="em").lr == MODEL_DEFAULTS["em"]["lr"] != TrainConfig().lr
    assert TrainConfig(model="em", lr=3e-3).lr == 3e-3
    assert TrainConfig(model="em", data=make_raw_rs(tmp_path / "logos")).lr == \
        MODEL_DEFAULTS["em"]["lr"]


def test_checkpoints_stored_before_the_presets_read_as_they_were_trained():
    """They stored None for the network options left out, and lack later options."""
    stored = TrainConfig(data=None).to_json()
    for name in ("conv_channels", "primary_types", "kernel_size", "cnn_channels"):
        stored[name] = None
    del stored["contrast_window"], stored["standardize"]
    old = TrainConfig.from_json(stored)
    assert old.conv_channels == SAMPLE_DEFAULTS["conv_channels"] and old.kernel_size == 9
    assert old.cnn_channels == SAMPLE_DEFAULTS["cnn_channels"]
    assert (old.contrast_window, old.standardize) == (0, False)
    elsewhere = TrainConfig.from_json({**stored, "data": "/moved/away"})
    assert elsewhere.conv_channels == CapsNetConfig().conv_channels
    assert elsewhere.cnn_channels == CNNConfig().channels


def test_a_checkpoint_with_an_option_this_version_lacks_is_refused_by_name():
    stored = {**TrainConfig(data=None).to_json(), "titles_at_logos": 0.5}
    with pytest.raises(MinicapsError, match="does not have \\(titles_at_logos\\)"):
        TrainConfig.from_json(stored)


def test_every_declared_option_is_on_the_command_line():
    train_help = invoke("train", "--help").output
    for f in declared(TrainConfig):
        assert option_name(TrainConfig, f.name) in train_help, f.name
    plan_help = invoke("plan", "--help").output
    for f in declared(CapsNetConfig):
        if f.name != "none_capsule":  # plan does not model it
            assert f"--{f.name.replace('_', '-')}" in plan_help, f.name
    epochs = f"[default: (8; {RS_DEFAULTS['epochs']} on R&S frames); x>=1]"
    assert epochs in " ".join(train_help.split())


def test_the_network_options_of_training_are_the_networks_own():
    options = {f.name: f.metadata for f in declared(TrainConfig)}
    for f in declared(CapsNetConfig):
        if f.name in options:
            assert options[f.name]["help"] == f.metadata["help"], f.name
            assert options[f.name]["default"] == f.metadata["default"], f.name
    assert options["cnn_hidden"]["default"] == CNNConfig().hidden


@pytest.mark.parametrize("bad, word", [(dict(lr=0.0), "lr"), (dict(model="mlp"), "model"),
                                       (dict(crop_corners=("tl", "middle")), "crop_corners")])
def test_the_library_holds_a_new_run_to_the_declared_ranges(tmp_path, bad, word):
    with pytest.raises(MinicapsError, match=word):
        train.run(TrainConfig(out=str(tmp_path), **bad))
    assert not (tmp_path / "last.npz").exists()


def test_network_configs_hold_their_declared_ranges():
    with pytest.raises(MinicapsError, match="routing_iters must be at least 1"):
        CapsNetConfig(routing_iters=0)
    with pytest.raises(MinicapsError, match="in_shape needs 3"):
        CapsNetConfig(in_shape=(28, 28))
    with pytest.raises(MinicapsError, match="hidden must be at least 1"):
        CNNConfig(hidden=(16, 0))
    assert dataclasses.replace(CapsNetConfig(), routing_grad="last").routing_grad == "last"


def test_a_run_stored_before_the_presets_resumes_on_the_network_it_trained(tmp_path):
    from test_train import synthetic
    small = dict(kernel_size=5, primary_dim=4, class_dim=8, batch_size=16)
    train.run(TrainConfig(out=str(tmp_path), epochs=1, **small), dataset=synthetic())
    ckpt = checkpoint.load(tmp_path / "last.npz")
    assert ckpt.model_config.conv_channels == SAMPLE_DEFAULTS["conv_channels"]
    old = {**ckpt.train_config, "conv_channels": None, "primary_types": None,
           "conv_stride": None, "cnn_channels": None}  # as such a run stored them
    del old["contrast_window"]
    checkpoint.save(tmp_path / "last.npz", dataclasses.replace(ckpt, train_config=old))
    history = train.resume(tmp_path, epochs=2, dataset=synthetic())
    assert [r["epoch"] for r in history] == [1, 2]

"""The pictures: right sizes, real content, one-line errors. A tiny net trained a few
steps stands in for a real checkpoint."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from minicaps import Adam, CapsNet
from minicaps.cli.main import main
from minicaps.tools.show import (STEPS, coupling_map, perturbation_grid, reconstruction_grid,
                           training_curves)


@pytest.fixture(scope="module")
def net_and_images():
    rng = np.random.default_rng(0)
    net = CapsNet(in_shape=(1, 16, 16), n_classes=3, conv_channels=8, kernel_size=5,
                  primary_types=4, primary_dim=4, class_dim=6)
    x = rng.random((6, 1, 16, 16)).astype(np.float32)
    optimizer = Adam(net.params, lr=3e-3)
    for _ in range(5):
        optimizer.step(net.loss_and_grads(x, np.arange(6) % 3)[1])
    return net, x


def test_reconstruction_grid_pairs_each_input_with_its_reconstruction(net_and_images):
    net, x = net_and_images
    image = reconstruction_grid(net, x, columns=3)
    zoom, gap = 3, 2
    assert image.size == (6 * (16 * zoom + gap) - gap, 2 * (16 * zoom + gap) - gap)
    left = np.asarray(image)[:16 * zoom, :16 * zoom]  # the first input, zoomed
    np.testing.assert_array_equal(left[::zoom, ::zoom], (x[0, 0] * 255).round())


def test_perturbation_grid_has_a_row_per_dimension_and_a_column_per_step(net_and_images):
    net, x = net_and_images
    image = np.asarray(perturbation_grid(net, x[0]))
    tile = 16 * 3 + 2
    assert image.shape[0] == 6 * tile - 2 and image.shape[1] == len(STEPS) * tile - 2
    # Moving a dimension changes the reconstruction: the columns of a row differ.
    assert not np.array_equal(image[:48, :48], image[:48, -48:])


def test_coupling_map_has_a_row_per_class(net_and_images):
    net, x = net_and_images
    image = coupling_map(net, x[0])
    gh, gw = net.config.grid
    assert image.size[0] == 4 * gw * 4
    assert image.size[1] == 3 * gh * 4 + 2 * 3


def test_training_curves_from_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5,
                                        "val_accuracy": 0.6, "test_accuracy": None}) + "\n"
                            for e in (1, 2, 3)))
    image = training_curves(path)
    assert image.size == (1280, 300)
    assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 3  # lines, not blank


def test_show_curves_of_a_folder_without_metrics_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["show", "curves", str(tmp_path), "--out",
                                       str(tmp_path / "c.png")])
    assert result.exit_code == 1
    assert "no metrics.jsonl" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c.png").exists()

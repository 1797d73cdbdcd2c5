"""Fixed test-time transforms and `evaluate --transform`."""
import numpy as np
import pytest
from click.testing import CliRunner

from minicaps import MinicapsError
from minicaps.tools import transforms
from minicaps.cli.main import main


def digit():
    x = np.zeros((1, 1, 9, 9), np.uint8)
    x[0, 0, 2:7, 4] = 255  # a vertical bar
    return x


def test_rotating_a_bar_by_90_degrees_makes_it_horizontal():
    out = transforms.apply(digit(), "rotate:90")
    np.testing.assert_array_equal(out[0, 0], digit()[0, 0].T)  # symmetric about the centre


def test_flip_shift_and_scale():
    x = np.arange(2 * 1 * 4 * 5, dtype=np.uint8).reshape(2, 1, 4, 5)
    np.testing.assert_array_equal(transforms.apply(x, "flip"), x[:, :, :, ::-1])
    shifted = transforms.apply(x, "shift:1")
    np.testing.assert_array_equal(shifted[:, :, 1:, 1:], x[:, :, :-1, :-1])
    assert (shifted[:, :, 0] == 0).all() and (shifted[:, :, :, 0] == 0).all()
    np.testing.assert_array_equal(transforms.apply(x, "scale:1"), x)


def test_contrast_and_brightness():
    x = np.array([[[[10, 50], [90, 130]]]], np.uint8)  # mean 70
    np.testing.assert_array_equal(transforms.apply(x, "contrast:0.5"), [[[[40, 60], [80, 100]]]])
    np.testing.assert_array_equal(transforms.apply(x, "contrast:3"), [[[[0, 10], [130, 250]]]])
    np.testing.assert_array_equal(transforms.apply(x, "brightness:-20"), [[[[0, 30], [70, 110]]]])
    np.testing.assert_array_equal(transforms.apply(x, "brightness:200"), [[[[210, 250], [255, 255]]]])


@pytest.mark.parametrize("spec", ["rotate", "scale:0", "scale:-1", "spin:3", "flip:2", "shift:x",
                                  "contrast:0", "contrast:-1", "brightness", "contrast",
                                  "contrast:inf", "brightness:nan"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(MinicapsError, match="--transform"):
        transforms.parse(spec)


def test_evaluate_with_a_bad_transform_is_one_clear_line(tmp_path):
    ckpt = tmp_path / "none.npz"
    ckpt.write_bytes(b"not read")
    result = CliRunner().invoke(main, ["evaluate", str(ckpt), "--transform", "spin:3"])
    assert result.exit_code == 1
    assert "--transform" in result.output and "Traceback" not in result.output


def test_affine_is_seeded_per_image_and_keeps_the_content_inside():
    x = np.zeros((6, 1, 40, 40), np.uint8)
    x[:, 0, 6:34, 17:23] = 255  # a tall bar, centred as a padded MNIST digit
    a, b = transforms.apply(x, "affine:3"), transforms.apply(x, "affine:3")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, transforms.apply(x, "affine:4"))
    assert len({img.tobytes() for img in a}) == 6  # each image its own map
    mass = a.astype(float).sum(axis=(1, 2, 3)) / x[0].astype(float).sum()
    assert ((mass > 0.6) & (mass < 1.6)).all(), mass  # scaled 0.8-1.2 per axis, none cut off


def test_warp_by_the_identity_changes_nothing():
    from minicaps.training.augment import warp
    x = np.random.default_rng(0).integers(0, 255, (3, 2, 7, 9)).astype(np.uint8)
    identity = np.tile(np.eye(2), (3, 1, 1))
    np.testing.assert_array_equal(warp(x, identity), x)
    np.testing.assert_array_equal(warp(x, identity, nearest=True), x)


@pytest.mark.parametrize("spec", ["affine:x", "affine:-1"])
def test_bad_affine_specs_are_refused(spec):
    with pytest.raises(MinicapsError, match="--transform"):
        transforms.parse(spec)

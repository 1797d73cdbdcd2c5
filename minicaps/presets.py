"""Training defaults that depend on the data's layout.

`minicaps train --data <R&S folder>` with no other option trains the configuration below;
any option given on the command line (or any TrainConfig field a library user sets)
overrides its entry. Why each value (README, "Logo frames"):

- crops: the top-left, top-right and bottom-left corners, 192x96 frame pixels at half
  size (3x48x96). 99.6 % of the real challenge's 42,684 logo boxes lie whole in such a crop
  and only 25 of them in the bottom-right corner (tvlogos-de: none; 4 of its 2,400 train
  frames, kabel1doku, lie outside); together the three crops are half the pixels of the
  4 x 320x140 default, at 1.25x its resolution (prosieben and prosiebenmaxx, sat1 and
  sat1gold differ in small text);
- the network, optimiser and shifts of the issue's "plain design" (reported there at about
  80 % frame accuracy in 16 minutes on the two top corners: conv 128 channels 9x9 stride 2,
  16 primary types, Adam 1e-3, shifts of 3 px), no decoder;
- standardised input and one transform per primary capsule (the paper's), from a probe:
  fitting 64 training corners (48 logo, 16 nologo) for 60 Adam steps reached 97 % with
  both, 72 % with raw pixels, 64 % with standardised input and shared transforms, 34 % with
  raw pixels and shared transforms. Raw photographs, unlike MNIST's black background,
  drove conv1's ReLUs dead in every full run before this (README, "Logo frames").

Measured so far: a 3-epoch screening run of these defaults reached 11.5, 46.8 and 80.0 %
test frame accuracy after epochs 1-3 (README, "Logo frames"); a full 12-epoch run is still
to be made. The jitter options are there, off.
"""

RS_DEFAULTS = dict(
    epochs=12, batch_size=32, lr=1e-3, lr_decay=0.95,
    shift=3, scale_jitter=0.0, colour_jitter=0.0, blur=0.0, nologo_ratio=None,
    nologo_capsule=True, init_length=None,
    share_transforms=False, reconstruction=False, standardize=True,
    conv_channels=128, kernel_size=9, conv_stride=2, primary_types=16, primary_dim=8,
    primary_stride=2, class_dim=16, routing_iters=3,
    crop_corners=("tl", "tr", "bl"), crop_width=192, crop_height=96, crop_scale=0.5,
    cnn_channels=(32, 64, 64),  # the CNN baseline, of about this CapsNet's size (README)
)


def layout_defaults(layout):
    """{TrainConfig field: default} for data of `layout` ("rs", "idx", ...); {} if none."""
    return dict(RS_DEFAULTS) if layout == "rs" else {}

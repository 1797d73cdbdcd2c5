"""Training defaults that depend on the data's layout.

`minicaps train --data <R&S folder>` with no other option trains the configuration below;
any option given on the command line (or any TrainConfig field a library user sets)
overrides its entry. Why each value, measured on tvlogos-de (README, "Logo frames"):

- crops: the top-left, top-right and bottom-left corners, 192x96 frame pixels at half
  size (3x48x96). 99.6 % of the real challenge's 42,684 logo boxes lie whole in such a crop
  and only 25 of them in the bottom-right corner; the crop is a third of the pixels of the
  4 x 320x140 default at 1.25x its resolution, where prosieben and prosiebenmaxx differ;
- a small network with shared transforms and no decoder: 242,560 weights;
- every logo corner once per epoch and 0.3 nologo corners per logo corner, drawn afresh each
  epoch (with all of them, or as many as logos, the class capsules all collapse to nologo
  for the first epochs: routing feeds the longest capsule);
- augmentation for frames and logos the set does not contain: shifts, zoom, colour, blur.
"""

RS_DEFAULTS = dict(
    epochs=18, batch_size=32, lr=1e-3, lr_decay=0.9,
    shift=3, scale_jitter=0.1, colour_jitter=0.2, blur=0.1, nologo_ratio=1.0,
    nologo_capsule=True, init_length=None,
    share_transforms=True, reconstruction=False,
    conv_channels=64, kernel_size=9, conv_stride=2, primary_types=16, primary_dim=8,
    primary_stride=2, class_dim=16, routing_iters=3,
    crop_corners=("tl", "tr", "bl"), crop_width=192, crop_height=96, crop_scale=0.5,
)


def layout_defaults(layout):
    """{TrainConfig field: default} for data of `layout` ("rs", "idx", ...); {} if none."""
    return dict(RS_DEFAULTS) if layout == "rs" else {}

"""Plan a training step of an EM capsule network (minicaps.nets.emcapsnet) before allocating
anything: parameters, memory, FLOPs. minicaps.tools.plan calls it for kind "em".

Almost all of an EM step's memory and time goes to the votes of its capsule layers,
V (B, P, J, I, 16), and to EM routing's passes over them; the ReLU convolution and the
primary capsules are small beside them. The memory model counts, in units of each layer's
votes V and of its assignments R (B, P, J, I, a sixteenth of V), what the code holds:

- kept from forward to backward, per layer: its receptive fields' poses, the votes, and
  routing's caches: each M-step kept holds R and R scaled by the activations (2 R) and
  the parents' mean and variance; each E-step kept the parents' log-activations and
  normaliser (small);
- forward's transient in a routing layer: the votes' deviations from the means and their
  squares (2 V);
- backward's transient in a routing layer: an M-step's backward holds the deviations, the
  votes' gradient and three R-sized gradients (2 V + 3 R); an E-step's (routing_grad
  "full", two iterations or more) also the gradients reaching the votes through the
  E-step and their running sum (5 V + 5 R in all).

tests/test_plan.py holds the whole model to within 15 % of tracemalloc's measured peak.
"""
import numpy as np

from ..fast.dispatch import examples_routed_at_once
from ..nets.network import input_channels

POSE_ENTRIES = 16
M_STEP_KEPT_R = 2          # R and r = R * a per M-step kept for backward
M_STEP_BACKWARD = (2, 3)   # (V, R) an M-step's backward holds at once
E_STEP_BACKWARD = (5, 5)   # (V, R) with an E-step's backward in the same layer


def routing_layers(config):
    """(P, J, I) of each routing layer of `config`: parent positions, parent types, and the
    children a parent sees."""
    K = config.caps_kernel
    layers = [(gh * gw, t_out, K * K * t_in)
              for (gh, gw), t_in, t_out in zip(config.grids[1:], config.types[:-1],
                                               config.types[1:])]
    gh, gw = config.grids[-1]
    return layers + [(1, config.n_classes, gh * gw * config.types[-1])]


def votes_per_image(config):
    """Elements of every routing layer's votes for one image."""
    return sum(P * J * I * POSE_ENTRIES for P, J, I in routing_layers(config))


def _kept_m_steps(config):
    return config.routing_iters if config.routing_grad == "full" else 1


def step_elements(config, batch_size, device="cpu"):
    """Peak elements of one training step on `device`: what forward keeps, plus the
    largest transient (forward's or backward's) of any routing layer, plus the
    parameters' gradients. On the CPU routing runs in tiles of examples
    (minicaps.fast.tiles): its transients exist for the examples routed at once, beside
    the whole batch's gradient of the votes, and the votes' own backward (the gradient
    and a reordered copy of it, 2 V) can then be the largest."""
    B, (_, h, w) = batch_size, config.in_shape
    itemsize = np.dtype(config.dtype).itemsize
    (g0h, g0w), A, T0 = config.grids[0], config.conv_channels, config.primary_types
    conv1_h = g0h * g0w * A * B
    # conv1 keeps its batch-last input and its output, ReLU its output, the primary
    # capsules their input rows and their output (poses and activations).
    kept = (B * input_channels(config) * h * w + 3 * conv1_h
            + B * g0h * g0w * T0 * (POSE_ENTRIES + 1))
    # Backward goes through E-steps with the full gradient and two iterations or more.
    through_e = config.routing_grad == "full" and config.routing_iters > 1
    transients = []
    for P, J, I in routing_layers(config):
        V = B * P * J * I * POSE_ENTRIES
        R = V // POSE_ENTRIES
        pose = B * P * J * POSE_ENTRIES  # a parent-sized array: means, variances
        fields = B * P * I * (POSE_ENTRIES + 1)
        kept += fields + V + _kept_m_steps(config) * (M_STEP_KEPT_R * R + 2 * pose)
        v, r = E_STEP_BACKWARD if through_e else M_STEP_BACKWARD
        at_once = examples_routed_at_once(B, V // B * itemsize, device, em=True)
        tiled = V if at_once < B else 0  # the whole batch's dvotes, filled tile by tile
        transients += [at_once * (2 * V + R) // B,
                       tiled + at_once * (v * V + r * R) // B, 2 * V]
    return kept + max(transients) + config.n_params()


def flop_parts(config):
    """Forward FLOPs per image (a multiply-add is 2) of each stage. A vote entry is a
    4-term dot product (8); an M-step passes over the votes about 6 times per entry
    (weighted sum, deviation, square, weighted sum), an E-step about 5."""
    (_, h, w), (g0h, g0w) = config.in_shape, config.grids[0]
    A, k = config.conv_channels, config.kernel_size
    votes = votes_per_image(config)
    n = config.routing_iters
    return {
        "conv1": 2 * input_channels(config) * k * k * A * g0h * g0w,
        "primary": 2 * A * config.primary_types * (POSE_ENTRIES + 1) * g0h * g0w,
        "votes": 8 * votes,
        "routing": votes * (6 * n + 5 * (n - 1)),
    }


# Passes over the votes (each reads or writes an array of their size): an M-step's weighted
# sums, deviations and squares about 5, an E-step's about 4; a backward pass about twice
# its forward's. The votes' product writes them once.
M_STEP_PASSES, E_STEP_PASSES = 5, 4


def votes_passes(config):
    """Passes over the votes in a training step (forward and backward)."""
    n = config.routing_iters
    m, e = (n, n - 1) if config.routing_grad == "full" else (1, 0)
    forward = 1 + M_STEP_PASSES * n + E_STEP_PASSES * (n - 1)
    return forward + 2 * (1 + M_STEP_PASSES * m + E_STEP_PASSES * e)


def em_plan(config, batch_size, plan_class, device="cpu"):
    """The Plan (plan_class: minicaps.tools.plan.Plan) of a training step of an
    EMCapsNetConfig. Backward: each product once more for the weights and once for the
    inputs (not conv1's), routing's about twice its forward. The large matrix products
    are conv1's and the primary capsules'; the votes and routing are passes over memory
    (votes_passes)."""
    itemsize = np.dtype(config.dtype).itemsize
    f = flop_parts(config)
    forward = sum(f.values())
    train = forward + f["conv1"] + 2 * (f["primary"] + f["votes"] + f["routing"])
    n = config.n_params()
    return plan_class(n_params=n, param_bytes=3 * n * itemsize,
                      step_bytes=itemsize * step_elements(config, batch_size, device),
                      flops_forward=float(forward), flops_train=float(train),
                      gemm_flops_train=float(2 * f["conv1"] + 3 * f["primary"]),
                      traffic_bytes=float(votes_per_image(config) * votes_passes(config)
                                          * itemsize),
                      batch_size=batch_size)

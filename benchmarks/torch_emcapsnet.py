"""The same EMCapsNet written with PyTorch autograd: an independent oracle for minicaps'
hand-written gradients of EM routing, and a speed reference. Dev-only: minicaps never
imports it.

`TorchEMCapsNet(config, params)` takes a minicaps EMCapsNetConfig and params dict (same
names). It is written from the paper's formulas with PyTorch's own tools, not from
minicaps' ops: receptive fields by Tensor.unfold, the sum over every field that holds a
child by F.fold, votes by einsum, the M-step's sums and the E-step's normaliser as they
read. The constants are minicaps' (em_routing.VARIANCE_FLOOR, SUPPORT_FLOOR).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from minicaps.ops.em_routing import SUPPORT_FLOOR, VARIANCE_FLOOR

H = 16


def m_step(votes, R, a_in, beta_u, beta_a, lam):
    """votes (B, P, J, I, H), R (B, P, J, I), a_in (B, P, I) -> mean, variance, log a."""
    r = R * a_in[:, :, None, :]
    S = r.sum(-1)
    mean = (r[..., None] * votes).sum(3) / (S[..., None] + SUPPORT_FLOOR)
    variance = (r[..., None] * (votes - mean[:, :, :, None]) ** 2).sum(3) \
        / (S[..., None] + SUPPORT_FLOOR) + VARIANCE_FLOOR
    cost = ((beta_u[:, None] + 0.5 * torch.log(variance)) * S[..., None]).sum(-1)
    return mean, variance, F.logsigmoid(lam * (beta_a - cost))


def e_step(votes, mean, variance, log_a, total):
    """Assignments R (B, P, J, I); total(z) sums z (B, P, I) over every copy of a child."""
    log_p = -(((votes - mean[:, :, :, None]) ** 2) / (2 * variance[:, :, :, None])).sum(-1) \
        - 0.5 * torch.log(2 * math.pi * variance).sum(-1)[..., None]
    log_ap = log_a[..., None] + log_p
    shift = log_ap.detach().amax(dim=(1, 2, 3), keepdim=True)  # one constant per example
    ap = torch.exp(log_ap - shift)
    return ap / total(ap.sum(2))[:, :, None]


def em_routing(votes, a_in, beta_u, beta_a, lambdas, grad, total):
    R = 1 / total(torch.full_like(a_in, votes.shape[2]))[:, :, None].expand(votes.shape[:4])
    for t, lam in enumerate(lambdas):
        last = t == len(lambdas) - 1
        if last and grad == "last":
            R = R.detach()
        mean, variance, log_a = m_step(votes, R, a_in, beta_u, beta_a, lam)
        if not last:
            R = e_step(votes, mean, variance, log_a, total)
    return mean, torch.exp(log_a)


class TorchEMCapsNet:
    def __init__(self, config, params, dtype=torch.float64, device="cpu"):
        self.config = config
        self.conv_weights = config.conv_weight_names()
        self.params = {name: self._leaf(name, p, dtype, device) for name, p in params.items()}

    def _leaf(self, name, array, dtype, device):
        tensor = torch.from_numpy(np.asarray(array))
        if name in self.conv_weights:  # minicaps (in, kh, kw, out) -> PyTorch (out, in, kh, kw)
            tensor = tensor.permute(3, 0, 1, 2)
        return tensor.to(dtype=dtype, device=device, copy=True,
                         memory_format=torch.contiguous_format).requires_grad_()

    def _minicaps_layout(self, name, array):
        return np.moveaxis(array, 0, -1) if name in self.conv_weights else array

    def _conv_caps(self, poses, acts, n):
        """poses (B, gh, gw, T, H), acts (B, gh, gw, T) -> the next grid's."""
        cfg, p = self.config, self.params
        K, s = cfg.caps_kernel, cfg.caps_strides[n - 1]
        B, gh, gw, T, _ = poses.shape
        fields = poses.unfold(1, K, s).unfold(2, K, s)  # (B, oh, ow, T, H, K, K)
        oh, ow = fields.shape[1:3]
        fields = fields.permute(0, 1, 2, 5, 6, 3, 4).reshape(B, oh * ow, K * K * T, 4, 4)
        field_acts = acts.unfold(1, K, s).unfold(2, K, s)  # (B, oh, ow, T, K, K)
        field_acts = field_acts.permute(0, 1, 2, 4, 5, 3).reshape(B, oh * ow, K * K * T)
        votes = torch.einsum("bpixy,ijyz->bpjixz", fields, p[f"convcaps{n}.w"])
        votes = votes.reshape(B, oh * ow, -1, K * K * T, H)

        def total(z):  # (B, P, I): fold sums every field's copy of a cell, unfold copies back
            cols = z.reshape(B, oh * ow, K, K, T).permute(0, 4, 2, 3, 1)
            cols = cols.reshape(B, T * K * K, oh * ow)
            cells = F.fold(cols, (gh, gw), K, stride=s)  # (B, T, gh, gw)
            back = F.unfold(cells, K, stride=s).reshape(B, T, K, K, oh * ow)
            return back.permute(0, 4, 2, 3, 1).reshape(B, oh * ow, K * K * T)

        mean, a = em_routing(votes, field_acts, p[f"convcaps{n}.beta_u"],
                             p[f"convcaps{n}.beta_a"], cfg.inverse_temperatures(),
                             cfg.routing_grad, total)
        J = a.shape[-1]
        return mean.reshape(B, oh, ow, J, H), a.reshape(B, oh, ow, J)

    def _class_caps(self, poses, acts):
        cfg, p = self.config, self.params
        B, gh, gw, T, _ = poses.shape
        w = p["class.w"]
        if not cfg.share_class_transforms:  # param_shapes' layout: (row, column, type) first
            w = w.reshape(gh, gw, T, cfg.n_classes, 4, 4)
        else:
            w = w[None, None].expand(gh, gw, *w.shape)
        votes = torch.einsum("bghtxy,ghtjyz->bjghtxz", poses.reshape(B, gh, gw, T, 4, 4),
                             w)  # (B, J, gh, gw, T, 4, 4)
        if cfg.coordinate_addition:
            rows, cols = (torch.tensor(c, dtype=votes.dtype, device=votes.device)
                          for c in cfg.class_coordinates())
            offsets = torch.zeros(gh, gw, 4, 4, dtype=votes.dtype, device=votes.device)
            offsets[:, :, 0, 3] = rows[:, None]
            offsets[:, :, 1, 3] = cols[None, :]
            votes = votes + offsets[:, :, None]
        votes = votes.reshape(B, 1, cfg.n_classes, gh * gw * T, H)
        _, a = em_routing(votes, acts.reshape(B, 1, -1), p["class.beta_u"], p["class.beta_a"],
                          cfg.inverse_temperatures(), cfg.routing_grad, lambda z: z)
        return a[:, 0]

    def activations(self, x):
        cfg, p = self.config, self.params
        x = torch.as_tensor(x, dtype=p["conv1.w"].dtype, device=p["conv1.w"].device)
        h = F.relu(F.conv2d(x, p["conv1.w"], p["conv1.b"], stride=cfg.conv_stride))
        out = F.conv2d(h, p["primary.w"], p["primary.b"]).permute(0, 2, 3, 1)
        B, gh, gw, _ = out.shape
        T = cfg.primary_types
        poses = out[..., :T * H].reshape(B, gh, gw, T, H)
        acts = torch.sigmoid(out[..., T * H:])
        for n in range(1, len(cfg.caps_types) + 1):
            poses, acts = self._conv_caps(poses, acts, n)
        return self._class_caps(poses, acts)

    def loss(self, x, y, margin):
        a = self.activations(x)
        y = torch.as_tensor(y, dtype=torch.long, device=a.device)
        t = F.one_hot(y, self.config.n_classes).to(a.dtype)
        a_t = (a * t).sum(1, keepdim=True)
        return ((F.relu(margin - (a_t - a)) * (1 - t)) ** 2).sum() / a.shape[0]

    def loss_and_grads(self, x, y, margin):
        for q in self.params.values():
            q.grad = None
        loss = self.loss(x, y, margin)
        loss.backward()
        return loss.item(), {name: self._minicaps_layout(name, q.grad.cpu().numpy())
                             for name, q in self.params.items()}

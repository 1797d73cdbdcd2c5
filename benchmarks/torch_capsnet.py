"""The same CapsNet written with PyTorch autograd: an independent oracle for minicaps'
hand-written gradients and a speed/memory reference. Dev-only: minicaps never imports it.

`TorchCapsNet(config, params)` takes a minicaps config and params dict (same names), so
both libraries can run the very same weights. It holds the convolutions' weights in
PyTorch's own layout, (out, in, kh, kw) where minicaps has (in, kh, kw, out), so that
PyTorch runs as it would on its own, and hands gradients back in minicaps' layouts.
"""
import numpy as np
import torch
import torch.nn.functional as F

from minicaps.ops.losses import LAMBDA, M_MINUS, M_PLUS, RECONSTRUCTION_WEIGHT


def squash(s):
    sq = (s * s).sum(-1, keepdim=True)
    return s * (sq.sqrt() / (1 + sq))


class TorchCapsNet:
    def __init__(self, config, params, dtype=torch.float32, device="cpu"):
        self.config = config
        self.conv_weights = config.conv_weight_names()
        self.params = {name: self._leaf(name, p, dtype, device) for name, p in params.items()}

    def _leaf(self, name, array, dtype, device):
        """A contiguous copy of minicaps' parameter `name` in PyTorch's layout (conv weights
        out first), made by one copy: no host temporary to inflate the memory baseline."""
        tensor = torch.from_numpy(np.asarray(array))
        if name in self.conv_weights:
            tensor = tensor.permute(3, 0, 1, 2)
        return tensor.to(dtype=dtype, device=device, copy=True,
                         memory_format=torch.contiguous_format).requires_grad_()

    def _minicaps_layout(self, name, array):
        """A gradient of PyTorch's layout in minicaps' (the inverse of _leaf's move)."""
        return np.moveaxis(array, 0, -1) if name in self.conv_weights else array

    def loss(self, x, y):
        cfg, p = self.config, self.params
        x = torch.as_tensor(x, dtype=p["conv1.w"].dtype, device=p["conv1.w"].device)
        y = torch.as_tensor(y, dtype=torch.long, device=x.device)
        B = x.shape[0]
        h = F.relu(F.conv2d(x, p["conv1.w"], p["conv1.b"], stride=cfg.conv_stride))
        out = F.conv2d(h, p["primary.w"], p["primary.b"], stride=cfg.primary_stride)
        T, D = cfg.primary_types, cfg.primary_dim
        gh, gw = out.shape[2:]
        u = squash(out.view(B, T, D, gh, gw).permute(0, 1, 3, 4, 2).reshape(B, -1, D))
        w = p["caps.w"]
        if cfg.share_transforms:  # one matrix per type for all its gh * gw positions
            w = w.repeat_interleave(u.shape[1] // w.shape[0], dim=0)
        u_hat = torch.einsum("ijed,bid->bjie", w, u)  # (B, J, I, E)
        routed = u_hat.detach() if cfg.routing_grad == "last" else u_hat
        logits = torch.zeros(u_hat.shape[:3], dtype=u_hat.dtype, device=u_hat.device)
        for r in range(cfg.routing_iters):
            c = torch.softmax(logits, dim=1)
            last = r == cfg.routing_iters - 1
            source = u_hat if last else routed
            if last and cfg.routing_grad == "last":
                c = c.detach()
            v = squash(torch.einsum("bji,bjie->bje", c, source))
            if not last:
                logits = logits + torch.einsum("bjie,bje->bji", routed, v)
        v = v[:, :cfg.n_classes]  # without the none-of-the-above capsule, if any
        lengths = v.norm(dim=-1)
        t = F.one_hot(y, cfg.n_classes).to(lengths.dtype)
        loss = (t * F.relu(M_PLUS - lengths) ** 2
                + LAMBDA * (1 - t) * F.relu(lengths - M_MINUS) ** 2).sum() / B
        if cfg.reconstruction:
            z = (v * t[:, :, None]).reshape(B, -1)
            z = F.relu(z @ p["decoder.0.w"] + p["decoder.0.b"])
            z = F.relu(z @ p["decoder.1.w"] + p["decoder.1.b"])
            recon = torch.sigmoid(z @ p["decoder.2.w"] + p["decoder.2.b"])
            loss = loss + RECONSTRUCTION_WEIGHT * ((recon - x.reshape(B, -1)) ** 2).sum() / B
        return loss

    def loss_and_grads(self, x, y):
        for q in self.params.values():
            q.grad = None
        loss = self.loss(x, y)
        loss.backward()
        return loss.item(), {name: self._minicaps_layout(name, q.grad.cpu().numpy())
                             for name, q in self.params.items()}

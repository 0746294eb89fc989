"""The first-order picture of finetuning (Ren et al., 2023), computed exactly for small models.

After one step of plain SGD with learning rate η on N samples, the features of a held-out point
x̃ change by, to first order,

    z_{t+1}(x̃) - z_t(x̃) = η/N Σ_i eNTK(x̃, x_i) · (∂logits/∂z (x_i))ᵀ · (e_{y_i} - q_t(x_i)),

with eNTK(x̃, x) = J(x̃) J(x)ᵀ the backbone's empirical neural tangent kernel (J = ∂z/∂θ), the
head's Jacobian giving the *direction* and e_y - q the *energy*. ``first_order_feature_change``
evaluates the right-hand side with explicit Jacobians (torch.func), so it can be compared with
the change a real SGD step makes. It forms (M, N, k, k) kernels: meant for checks on small models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap


def feature_jacobians(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J(x_i) = ∂z(x_i)/∂θ for every row: shape (N, k, P), θ = all trainable backbone params."""
    params = {n: p.detach() for n, p in backbone.named_parameters() if p.requires_grad}

    def z_of(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(backbone, p, (xi[None],))[0]

    jac = vmap(jacrev(z_of), in_dims=(None, 0))(params, x)  # dict of (N, k, *shape)
    return torch.cat([j.flatten(start_dim=2) for j in jac.values()], dim=2)


def entk(backbone: nn.Module, x_tilde: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """eNTK(x̃_m, x_i) = J(x̃_m) J(x_i)ᵀ for all pairs: shape (M, N, k, k)."""
    return torch.einsum(
        "mkp,nlp->mnkl", feature_jacobians(backbone, x_tilde), feature_jacobians(backbone, x)
    )


def head_jacobians(head: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """∂logits/∂z at every z_i: shape (N, C, k) (Vᵀ's transpose V for a linear head V)."""
    return vmap(jacrev(lambda zi: head(zi[None])[0]))(z.detach())


def first_order_feature_change(
    backbone: nn.Module,
    head: nn.Module,
    x_tilde: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
) -> torch.Tensor:
    """The predicted z_{t+1}(x̃) - z_t(x̃) after one SGD step on mean cross-entropy: (M, k)."""
    with torch.no_grad():
        z = backbone(x)
        q = torch.softmax(head(z), dim=1)
        energy = F.one_hot(y, q.shape[1]).to(q.dtype) - q  # e_y - q_t(x_i)
    direction = head_jacobians(head, z)  # (N, C, k)
    push = torch.einsum("nck,nc->nk", direction, energy)  # (∂logits/∂z)ᵀ (e_y - q)
    kernel = entk(backbone, x_tilde, x)  # (M, N, k, k)
    return lr / len(x) * torch.einsum("mnkl,nl->mk", kernel, push)

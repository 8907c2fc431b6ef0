"""Swin Transformer v1 (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows", ICCV 2021) as the dense-prediction backbone of BiRefNet.

Written from the paper and the behaviour BiRefNet's parity fixtures pin down
(docs/birefnet.md): the detection/segmentation variant of the network, which

* pads every feature map at the right/bottom to a multiple of the window size (the padded
  tokens are **not** masked: they take part in the attention as keys carrying only the qkv
  bias), and always shifts the odd blocks by ``window // 2`` (no shrinking of the window on
  small maps);
* adds the learned relative position bias (``relative_position_bias_table`` indexed by the
  persistent ``relative_position_index`` buffer) and, in shifted blocks, the 3x3-region mask,
  through ``F.scaled_dot_product_attention`` (default scale ``head_dim ** -0.5``);
* merges patches as ``[x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]]`` after
  zero-padding to even sizes, then LayerNorm(4C) and Linear(4C -> 2C, no bias);
* returns the 4 stage outputs as NCHW maps (strides 4, 8, 16, 32), each after its own
  LayerNorm ``norm0 .. norm3``.

State-dict keys are the official ones (``patch_embed.*``, ``layers.{i}.blocks.{j}.*``,
``layers.{i}.downsample.*``, ``norm{i}.*``), so released checkpoints load strictly.
Stochastic depth (``DropPath``, attribute ``drop_prob``) is linear in the block index up to
``drop_path_rate``. ``activation_checkpointing=True`` recomputes each block in the backward
pass (``torch.utils.checkpoint``, non-reentrant; the dropout RNG state is replayed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from salseg.models.backbones.registry import Backbone, PretrainedSource, register_backbone

MASK_VALUE = -100.0  # shifted-window mask; exp(-100) underflows to 0 in float32 like -inf


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2 ** i for i in range(len(self.depths)))


# the configurations BiRefNet builds (``swin_v1_t/s/b/l``)
SWIN_CONFIGS = {
    "swin_v1_t": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_v1_s": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_v1_b": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swin_v1_l": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``drop_prob``."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def relative_position_index(window: int) -> torch.Tensor:
    """``(w*w, w*w)`` int64: ``(hi - hj + w - 1) * (2w - 1) + (wi - wj + w - 1)``."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing="ij")).flatten(1)  # 2, w*w
    rel = coords[:, :, None] - coords[:, None, :] + window - 1
    return rel[0] * (2 * window - 1) + rel[1]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with the relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def bias(self) -> torch.Tensor:
        n = self.window_size ** 2
        table = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return table.reshape(n, n, self.num_heads).permute(2, 0, 1)  # heads, N, N

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (B*nW, N, C); ``mask``: (nW, N, N) additive, or None."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each bw, heads, N, d
        bias = self.bias().unsqueeze(0).to(x.dtype)  # 1, heads, N, N
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:  # windows grouped per image (-1: the batch stays dynamic in an ONNX trace)
            nw, d = mask.shape[0], c // self.num_heads
            bias = bias.unsqueeze(0) + mask[None, :, None].to(x.dtype)  # 1, nW, heads, N, N
            q, k, v = (t.reshape(-1, nw, self.num_heads, n, d) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            out = out.reshape(-1, self.num_heads, n, d)
        return self.proj(out.transpose(1, 2).reshape(-1, n, c))


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``w`` -> (B * nW, w*w, C)."""
    _, h, wd, c = (int(s) for s in x.shape)
    x = x.view(-1, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(windows: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """(B * nW, w*w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, wd, c)


def shifted_window_mask(hp: int, wp: int, window: int, shift: int,
                        device: torch.device | None = None) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask: 0 inside a region, ``MASK_VALUE`` across regions.

    Built with NumPy from the sizes alone, so a traced graph holds it as a constant."""
    def bands(n: int) -> np.ndarray:  # 0, 1, 2 for the rows/columns of the three regions
        out = np.zeros(n, dtype=np.int64)
        out[n - window:n - shift] = 1
        out[n - shift:] = 2
        return out

    region = bands(hp)[:, None] * 3 + bands(wp)[None, :]  # hp, wp
    ids = region.reshape(hp // window, window, wp // window, window).transpose(0, 2, 1, 3)
    ids = ids.reshape(-1, window * window)  # nW, N
    mask = np.where(ids[:, None, :] != ids[:, :, None], MASK_VALUE, 0.0).astype(np.float32)
    return torch.from_numpy(mask).to(device)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int,
                mask: torch.Tensor | None) -> torch.Tensor:
        c = int(x.shape[-1])
        ws = self.window_size
        y = self.norm1(x).view(-1, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), mask if self.shift else None),
                           ws, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(-1, h * w, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        c = int(x.shape[-1])
        x = F.pad(x.view(-1, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(-1, ((h + 1) // 2) * ((w + 1) // 2), 4 * c)))


class SwinStage(nn.Module):
    """``depth`` blocks (odd ones shifted), then an optional PatchMerging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int,
                 drop_path: list[float], downsample: bool) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                      drop_path=drop_path[i]) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None
        self.activation_checkpointing = False

    def forward(self, x: torch.Tensor, h: int, w: int):
        # sizes as plain ints: window padding and the mask are constants of a traced graph
        h, w = int(h), int(w)
        ws = self.window_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        mask = shifted_window_mask(hp, wp, ws, ws // 2, device=x.device)
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, h, w, mask, use_reentrant=False)
            else:
                x = block(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    def __init__(self, patch: int = 4, in_ch: int = 3, dim: int = 96) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_ch, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % p or w % p:
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        return self.proj(x)  # B, C, H/4, W/4 (the LayerNorm is applied on tokens)


class SwinTransformer(nn.Module):
    """Swin v1 backbone: ``forward(x)`` returns 4 NCHW maps at strides 4, 8, 16, 32."""

    def __init__(self, config: SwinConfig | str = "swin_v1_t", in_ch: int = 3,
                 drop_path_rate: float = 0.2, activation_checkpointing: bool = False) -> None:
        super().__init__()
        cfg = SWIN_CONFIGS[config] if isinstance(config, str) else config
        self.config = cfg
        #: the registry name of this backbone (salseg.models.backbones), None for a custom config
        self.backbone_name = config if isinstance(config, str) else None
        self.patch_embed = PatchEmbed(4, in_ch, cfg.embed_dim)
        total = sum(cfg.depths)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            self.layers.append(SwinStage(cfg.channels[i], depth, heads, cfg.window_size,
                                         rates[start:start + depth],
                                         downsample=i < len(cfg.depths) - 1))
            start += depth
        for i, ch in enumerate(cfg.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(ch))
        self.activation_checkpointing = activation_checkpointing

    @property
    def channels(self) -> tuple[int, ...]:
        return self.config.channels

    @property
    def activation_checkpointing(self) -> bool:
        return all(stage.activation_checkpointing for stage in self.layers)

    @activation_checkpointing.setter
    def activation_checkpointing(self, value: bool) -> None:
        for stage in self.layers:
            stage.activation_checkpointing = bool(value)

    def enable_activation_checkpointing(self) -> int:
        """``model.activation_checkpointing``: recompute every block in the backward pass (the
        protocol of :mod:`salseg.models.checkpointing`); returns the number of blocks."""
        self.activation_checkpointing = True
        return sum(len(stage.blocks) for stage in self.layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        outs = []
        for i, stage in enumerate(self.layers):
            out, x, nh, nw = stage(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(-1, h, w, self.channels[i]).permute(0, 3, 1, 2).contiguous())
            h, w = nh, nw
        return outs


def swin_v1(name: str, **kwargs) -> SwinTransformer:
    """Build ``swin_v1_t`` / ``swin_v1_s`` / ``swin_v1_b`` / ``swin_v1_l``."""
    if name not in SWIN_CONFIGS:
        raise ValueError(f"unknown Swin configuration {name!r}; expected one of "
                         f"{sorted(SWIN_CONFIGS)}")
    return SwinTransformer(name, **kwargs)


# -- backbone records -----------------------------------------------------------------------
# The ImageNet weights BiRefNet's Config.weights names for each backbone, from the official Swin
# Transformer release (microsoft/Swin-Transformer, MIT; files ``{"model": state_dict}`` of the
# classification network).  They hold the classifier ``head``, the final ``norm`` and the
# shifted blocks' ``attn_mask`` buffers, which this backbone has not (dropped), and not the
# per-stage output norms ``norm0..norm3``, which keep their initialisation (as BiRefNet's
# loader, which copies only the keys both have).
_RELEASES = "https://github.com/SwinTransformer/storage/releases/download"
SWIN_IMAGENET = {
    "swin_v1_t": (f"{_RELEASES}/v1.0.8/swin_tiny_patch4_window7_224_22kto1k_finetune.pth",
                  "ImageNet-22k pre-trained, ImageNet-1k fine-tuned, 224², window 7"),
    "swin_v1_s": (f"{_RELEASES}/v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth",
                  "ImageNet-22k pre-trained, ImageNet-1k fine-tuned, 224², window 7"),
    "swin_v1_b": (f"{_RELEASES}/v1.0.0/swin_base_patch4_window12_384_22kto1k.pth",
                  "ImageNet-22k pre-trained, ImageNet-1k fine-tuned, 384², window 12"),
    "swin_v1_l": (f"{_RELEASES}/v1.0.0/swin_large_patch4_window12_384_22kto1k.pth",
                  "ImageNet-22k pre-trained, ImageNet-1k fine-tuned, 384², window 12"),
}


def swin_classification_keys(key: str) -> str | None:
    """A key of the official Swin classification checkpoint -> this backbone's (None: dropped)."""
    if key.startswith(("head.", "norm.")) or key.endswith(".attn_mask"):
        return None
    return key


def _stage_norm(key: str) -> bool:
    return key.split(".", 1)[0] in {f"norm{i}" for i in range(4)}


def _builder(name: str):
    def build(**kwargs) -> SwinTransformer:
        return SwinTransformer(name, **kwargs)
    build.__name__ = name
    return build


for _name, (_url, _desc) in SWIN_IMAGENET.items():
    register_backbone(Backbone(
        name=_name, build=_builder(_name), channels=SWIN_CONFIGS[_name].channels,
        strides=(4, 8, 16, 32),
        pretrained={"imagenet": PretrainedSource(url=_url, description=_desc,
                                                 key_map=swin_classification_keys,
                                                 init_keys=_stage_norm)}))


__all__ = ["SWIN_CONFIGS", "SWIN_IMAGENET", "DropPath", "SwinConfig", "SwinTransformer",
           "swin_classification_keys", "swin_v1"]

"""BiRefNet (Zheng et al., "Bilateral Reference for High-Resolution Dichotomous Image
Segmentation", CAAI Artificial Intelligence Research 2024; official code MIT) on a Swin v1
backbone (``salseg.models.backbones.swin``).

Written from the paper and the specification of the official forward pass in the parity
reference (docs/birefnet.md), with the configuration of the released general-use / DIS5K
weights: multi-scale input (``cat``: the backbone also runs on the half-size image), context
concatenation of x1..x3 before x4, one squeeze ``BasicDecBlk``, decoder blocks with
``ASPPDeformable`` attention (modulated deformable convolutions,
``torchvision.ops.deform_conv2d``), image tiles fed to every decoder stage ("inward
reference", tiles stacked on channels as ``c hg wg``), multi-scale supervision and the
gradient branch ("outward reference").

* ``eval()``: ``forward`` returns ``[logits]`` (a list holding one ``B x 1 x H x W`` map);
* ``train()``: ``[((gdt_preds, gdt_labels), [m4, m3, m2, logits]), [None]]`` as the official
  code does; ``m4, m3, m2`` at H/32, H/16, H/8; the gradient labels
  ``laplacian(mean_rgb(x)) * up(m_k)`` are **not** detached (the gradient loss also trains
  ``conv_ms_spvn_k`` through them).

H and W must be multiples of 32 (the tiles of the deepest stage are 32x32). State-dict keys
are the official ones (``bb.``, ``squeeze_module.0.``, ``decoder.``). The model card
(``BIREFNET_CARD``, ``BIREFNET_LITE_CARD``) is at the end of this module.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from salseg.models.backbones.swin import SWIN_CONFIGS, SwinTransformer
from salseg.models.card import ModelCard, ModelOutputs, Preprocessing, register_card

SIZE_MULTIPLE = 32
INTER_CHANNELS = 64  # ``dec_channels_inter = 'fixed'``
ASPP_CHANNELS = 256


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Every resize inside the model: bilinear, ``align_corners=True``."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def image_tiles(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut ``x`` into a ``grid x grid`` grid of contiguous tiles stacked on channels:
    channel ``c * grid**2 + i * grid + j`` holds channel c of the tile at row i, column j
    (``b c (hg h) (wg w) -> b (c hg wg) h w``; not ``pixel_unshuffle``)."""
    _, c, h, w = (int(s) for s in x.shape)
    x = x.reshape(-1, c, grid, h // grid, grid, w // grid).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(-1, c * grid * grid, h // grid, w // grid)


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """5x5 Laplacian with reflect padding, normalised by its absolute sum:
    ``(5x5 box sum - 25 * centre) / 48``."""
    kernel = torch.ones(1, 1, 5, 5, dtype=x.dtype, device=x.device)
    kernel[0, 0, 2, 2] = -24.0
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel / 48.0)


class DeformableConv2d(nn.Module):
    """Modulated deformable convolution (DCNv2): offsets and a ``2 * sigmoid`` modulation
    predicted by plain convolutions of the input."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        k = kernel_size
        self.padding = padding
        self.offset_conv = nn.Conv2d(in_ch, 2 * k * k, k, padding=padding)
        self.modulator_conv = nn.Conv2d(in_ch, k * k, k, padding=padding)
        self.regular_conv = nn.Conv2d(in_ch, out_ch, k, padding=padding, bias=False)
        for conv in (self.offset_conv, self.modulator_conv):  # official: zero initialised
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return deform_conv2d(x, offset, self.regular_conv.weight, None,
                             padding=(self.padding, self.padding), mask=mask)


class ASPPBranch(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int) -> None:
        super().__init__()
        self.atrous_conv = DeformableConv2d(in_ch, out_ch, kernel_size, kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPPDeformable(nn.Module):
    """Deformable 1x1 and 1x1/3x3/7x7 branches plus global pooling, fused by a 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int | None = None,
                 kernel_sizes: Sequence[int] = (1, 3, 7)) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.aspp1 = ASPPBranch(in_ch, ASPP_CHANNELS, 1)
        self.aspp_deforms = nn.ModuleList(ASPPBranch(in_ch, ASPP_CHANNELS, k)
                                          for k in kernel_sizes)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(in_ch, ASPP_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS), nn.ReLU(inplace=True))
        self.conv1 = nn.Conv2d(ASPP_CHANNELS * (2 + len(kernel_sizes)), out_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.aspp1(x)
        branches = [m(x) for m in self.aspp_deforms]
        pooled = resize(self.global_avg_pool(x), x1.shape[2:])
        x = torch.cat((x1, *branches, pooled), dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class BasicDecBlk(nn.Module):
    """3x3 conv (-> 64) -> BN -> ReLU -> ASPPDeformable -> 3x3 conv -> BN."""

    def __init__(self, in_ch: int, out_ch: int, inter_ch: int = INTER_CHANNELS) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_ch, inter_ch, 3, padding=1)
        self.relu_in = nn.ReLU(inplace=True)
        self.dec_att = ASPPDeformable(inter_ch)
        self.conv_out = nn.Conv2d(inter_ch, out_ch, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(inter_ch)
        self.bn_out = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_in(self.bn_in(self.conv_in(x)))
        return self.bn_out(self.conv_out(self.dec_att(x)))


class BasicLatBlk(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SimpleConvs(nn.Module):
    """Two 3x3 convs (-> 64 -> ``out_ch``), no norm, no activation (image-tile encoder)."""

    def __init__(self, in_ch: int, out_ch: int, inter_ch: int = INTER_CHANNELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, inter_ch, 3, padding=1)
        self.conv_out = nn.Conv2d(inter_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv1(x))


def _gdt_convs(in_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, 16, 3, padding=1), nn.BatchNorm2d(16),
                         nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """The BiRefNet decoder; ``channels`` = encoder channels x4..x1 (after the ``cat``)."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        c = list(channels)
        self.ipt_blk5 = SimpleConvs(3 * 32 ** 2, c[0] // 8)
        self.ipt_blk4 = SimpleConvs(3 * 16 ** 2, c[0] // 8)
        self.ipt_blk3 = SimpleConvs(3 * 8 ** 2, c[1] // 8)
        self.ipt_blk2 = SimpleConvs(3 * 4 ** 2, c[2] // 8)
        self.ipt_blk1 = SimpleConvs(3, c[3] // 8)
        self.decoder_block4 = BasicDecBlk(c[0] + c[0] // 8, c[1])
        self.decoder_block3 = BasicDecBlk(c[1] + c[0] // 8, c[2])
        self.decoder_block2 = BasicDecBlk(c[2] + c[1] // 8, c[3])
        self.decoder_block1 = BasicDecBlk(c[3] + c[2] // 8, c[3] // 2)
        self.conv_out1 = nn.Sequential(nn.Conv2d(c[3] // 2 + c[3] // 8, 1, 1))
        self.lateral_block4 = BasicLatBlk(c[1], c[1])
        self.lateral_block3 = BasicLatBlk(c[2], c[2])
        self.lateral_block2 = BasicLatBlk(c[3], c[3])
        self.conv_ms_spvn_4 = nn.Conv2d(c[1], 1, 1)
        self.conv_ms_spvn_3 = nn.Conv2d(c[2], 1, 1)
        self.conv_ms_spvn_2 = nn.Conv2d(c[3], 1, 1)
        for k, ch in zip((4, 3, 2), c[1:]):
            self.add_module(f"gdt_convs_{k}", _gdt_convs(ch))
        for k in (4, 3, 2):
            self.add_module(f"gdt_convs_pred_{k}", nn.Sequential(nn.Conv2d(16, 1, 1)))
        for k in (4, 3, 2):
            self.add_module(f"gdt_convs_attn_{k}", nn.Sequential(nn.Conv2d(16, 1, 1)))

    def _tiles(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return image_tiles(x, int(x.shape[-2]) // int(ref.shape[-2]))

    def _refine(self, k: int, p: torch.Tensor, gdt_gt: torch.Tensor | None,
                gdt: tuple[list, list], ms: list) -> torch.Tensor:
        """Side logits (train), gradient branch, and the gradient attention on ``p``."""
        g = getattr(self, f"gdt_convs_{k}")(p)
        if gdt_gt is not None:
            m = getattr(self, f"conv_ms_spvn_{k}")(p)
            ms.append(m)
            gdt[0].append(getattr(self, f"gdt_convs_pred_{k}")(g))
            gdt[1].append(gdt_gt * resize(m, gdt_gt.shape[2:]))  # not detached
        return p * torch.sigmoid(getattr(self, f"gdt_convs_attn_{k}")(g))

    def forward(self, x: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor,
                x4: torch.Tensor) -> Any:
        gdt_gt = laplacian(x.mean(dim=1, keepdim=True)) if self.training else None
        gdt: tuple[list, list] = ([], [])
        ms: list[torch.Tensor] = []
        p4 = self.decoder_block4(torch.cat(
            (x4, self.ipt_blk5(resize(self._tiles(x, x4), x4.shape[2:]))), 1))
        p4 = self._refine(4, p4, gdt_gt, gdt, ms)
        p3 = resize(p4, x3.shape[2:]) + self.lateral_block4(x3)
        p3 = self.decoder_block3(torch.cat(
            (p3, self.ipt_blk4(resize(self._tiles(x, x3), x3.shape[2:]))), 1))
        p3 = self._refine(3, p3, gdt_gt, gdt, ms)
        p2 = resize(p3, x2.shape[2:]) + self.lateral_block3(x2)
        p2 = self.decoder_block2(torch.cat(
            (p2, self.ipt_blk3(resize(self._tiles(x, x2), x2.shape[2:]))), 1))
        p2 = self._refine(2, p2, gdt_gt, gdt, ms)
        p1 = resize(p2, x1.shape[2:]) + self.lateral_block2(x1)
        p1 = self.decoder_block1(torch.cat(
            (p1, self.ipt_blk2(resize(self._tiles(x, x1), x1.shape[2:]))), 1))
        p1 = resize(p1, x.shape[2:])
        logits = self.conv_out1(torch.cat((p1, self.ipt_blk1(x)), 1))
        if not self.training:
            return [logits]
        return gdt, [*ms, logits]


BACKBONES = {"swin_v1_t", "swin_v1_s", "swin_v1_b", "swin_v1_l"}


class BiRefNet(nn.Module):
    """BiRefNet with a Swin v1 backbone (``swin_v1_t`` 44.3M parameters, ``swin_v1_l`` 220.2M)."""

    def __init__(self, backbone: str = "swin_v1_l", in_ch: int = 3, out_ch: int = 1,
                 activation_checkpointing: bool = False, drop_path_rate: float = 0.2) -> None:
        super().__init__()
        if backbone not in SWIN_CONFIGS:
            raise ValueError(f"unknown BiRefNet backbone {backbone!r}; expected one of "
                             f"{sorted(SWIN_CONFIGS)}")
        if in_ch != 3 or out_ch != 1:
            raise ValueError(f"BiRefNet takes 3 input channels and predicts 1 map, got "
                             f"in_ch={in_ch}, out_ch={out_ch}")
        self.in_ch, self.out_ch, self.backbone = in_ch, out_ch, backbone
        self.bb = SwinTransformer(backbone, in_ch=in_ch, drop_path_rate=drop_path_rate,
                                  activation_checkpointing=activation_checkpointing)
        enc = [2 * c for c in self.bb.channels]  # x1..x4 after the multi-scale ``cat``
        channels = enc[::-1]  # x4..x1
        self.squeeze_module = nn.Sequential(BasicDecBlk(channels[0] + sum(enc[:3]), channels[0]))
        self.decoder = Decoder(channels)

    @property
    def activation_checkpointing(self) -> bool:
        return self.bb.activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, value: bool) -> None:
        self.bb.activation_checkpointing = value

    def forward_enc(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[None]]:
        """Encoder: backbone on the image and on the half-size image, concatenated, then x1..x3
        resized to x4's size and concatenated before x4."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        full = self.bb(x)
        half = self.bb(resize(x, (h // 2, w // 2)))
        xs = [torch.cat((f, resize(g, f.shape[2:])), 1) for f, g in zip(full, half)]
        x4 = xs[3]
        xs[3] = torch.cat((*(resize(t, x4.shape[2:]) for t in xs[:3]), x4), 1)
        return xs, [None]

    def forward(self, x: torch.Tensor) -> Any:
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(f"BiRefNet needs an input height and width divisible by "
                             f"{SIZE_MULTIPLE}, got {h}x{w}")
        (x1, x2, x3, x4), class_preds = self.forward_enc(x)
        x4 = self.squeeze_module(x4)
        out = self.decoder(x, x1, x2, x3, x4)
        if not self.training:
            return out
        return [out, class_preds]


def birefnet_lite(**kwargs: Any) -> BiRefNet:
    """BiRefNet_lite: Swin-T backbone."""
    return BiRefNet("swin_v1_t", **kwargs)


def birefnet(**kwargs: Any) -> BiRefNet:
    """BiRefNet: Swin-L backbone (the released general-use and DIS5K weights)."""
    return BiRefNet("swin_v1_l", **kwargs)


# -- model cards -----------------------------------------------------------------------------
def _outputs(raw: Any) -> ModelOutputs:
    """eval ``[logits]``; train ``[((gdt_preds, gdt_labels), [m4, m3, m2, logits]), [None]]``.

    ``sides`` are ``[m4, m3, m2, logits]`` (train, the side maps resized to the input size with
    ``align_corners=True`` as the official loss does) or ``[logits]`` (eval); the gradient branch
    goes to ``aux`` (``gdt_preds`` at the decoder resolutions, ``gdt_labels`` at the input size).
    """
    if isinstance(raw, torch.Tensor):
        return ModelOutputs(sides=[raw], features=[], prediction=raw)
    if len(raw) == 1:  # eval
        return ModelOutputs(sides=[raw[0]], features=[], prediction=raw[0])
    (gdt_preds, gdt_labels), preds = raw[0]
    logits = preds[-1]
    size = logits.shape[-2:]
    sides = [p if p.shape[-2:] == size else resize(p, size) for p in preds[:-1]] + [logits]
    levels = tuple(f"level{len(preds) - i}" for i in range(len(preds) - 1)) + ("mask",)
    aux = {"gdt_preds": list(gdt_preds), "gdt_labels": list(gdt_labels),
           "side_logits": list(preds)}
    names = {"sides": levels, "side_logits": levels,
             **{k: tuple(f"{k[4:]}{i + 1}" for i in range(len(v)))
                for k, v in aux.items() if k.startswith("gdt_")}}
    return ModelOutputs(sides=sides, features=[], prediction=logits, aux=aux, names=names)


def _to_official(raw: Any) -> Any:
    """The official ``forward`` returns logits in both modes: the structure is already it."""
    return raw


# Official ``inference.py`` (dataset.MyData): cv2 INTER_LINEAR resize of the uint8 image to
# 1024x1024, ToTensor (/255), ImageNet mean/std (a grayscale file is read as 3 equal channels);
# output ``sigmoid`` resized with ``align_corners=True`` and truncated to 8 bits (no min-max).
BIREFNET_PREPROCESSING = Preprocessing(input_size=(1024, 1024), scale="255", gray="per_channel",
                                       resize="cv2_linear", restore="float_align_corners",
                                       normalization="sigmoid")
# The model-card / notebook snippet: PIL bilinear (anti-aliased) in, PIL bicubic out (a named
# option: ``dataclasses.replace(card.preprocessing, **MODEL_CARD_PIPELINE)``).
MODEL_CARD_PIPELINE = {"resize": "pil_bilinear", "restore": "pil_bicubic"}
PIPELINES = {"repo": {}, "card": MODEL_CARD_PIPELINE}

# The official training loss (loss.py ``PixLoss`` + the gradient loss of train.py) as loss terms
# (salseg.losses.terms): ``sum_l sum_c lambda_c * c(sigmoid(up(pred_l)), gt)`` over the 4 levels
# (m4, m3, m2, logits) and the criteria bce (``nn.BCELoss``), iou, ssim, mae, every map resized
# to the GT (bilinear, align_corners=True) before the sigmoid; plus ``sum_k BCE(sigmoid(up(
# gdt_pred_k)), sigmoid(gdt_label_k))`` over the 3 gradient-branch outputs, labels not detached.
# The fine-tune phase (``finetune_last_epochs``) multiplies the weights at the start of every
# fine-tune epoch, compounding: bce * 0, iou * 0.5, mae * 0.9, ssim * 1.
#: criteria of ``PixLoss`` in the official order, and their per-epoch fine-tune factors
PIX_CRITERIA = ("bce", "iou", "ssim", "mae")
FINETUNE_FACTORS = {"bce": 0.0, "iou": 0.5, "ssim": 1.0, "mae": 0.9}
DIS5K_LAMBDAS = {"bce": 30.0, "iou": 0.5, "ssim": 10.0}
GENERAL_LAMBDAS = {"bce": 30.0, "iou": 0.5, "ssim": 10.0, "mae": 100.0}


def birefnet_loss_config(lambdas: Mapping[str, float], finetune_last_epochs: int | None = None
                         ) -> dict:
    """The ``model.loss`` terms of BiRefNet with the given ``lambdas_pix_last``."""
    unsupported = sorted(k for k, v in lambdas.items() if v and k not in PIX_CRITERIA)
    if unsupported:
        raise ValueError(f"BiRefNet loss criteria {unsupported} are not implemented; "
                         f"supported: {list(PIX_CRITERIA)}")
    terms: dict = {}
    for c in PIX_CRITERIA:
        if not lambdas.get(c):
            continue  # the official PixLoss builds only the criteria of non-zero weight
        term = {"criterion": c, "outputs": "sides", "weight": float(lambdas[c]), "resize": "pred"}
        if c == "bce":
            term["form"] = "official"
        if finetune_last_epochs and FINETUNE_FACTORS[c] != 1.0:
            term["finetune"] = {"last_epochs": int(finetune_last_epochs),
                                "factor": FINETUNE_FACTORS[c]}
        terms[c] = term
    terms["gdt"] = {"criterion": "bce", "form": "official", "outputs": "gdt_preds",
                    "target": "aux:gdt_labels", "target_fn": "sigmoid", "resize": "pred"}
    return terms


DIS5K_FINETUNE = 40  # Config.finetune_last_epochs = -40 for DIS5K
#: the card's default loss (Config task='DIS5K'); configs/loss/birefnet_dis5k.yaml holds the same
DIS5K_LOSS = birefnet_loss_config(DIS5K_LAMBDAS, DIS5K_FINETUNE)

# Training (official train.py): AdamW over all parameters at one learning rate (no backbone
# rule: backbone_lr_mult 1; ``model.backbone_lr_mult`` gives the ``bb.`` parameters their own).
_COMMON = dict(preprocessing=BIREFNET_PREPROCESSING, outputs=_outputs, to_official=_to_official,
               side_names=("mask",), encoder_prefixes=("bb.",), backbone_prefixes=("bb.",),
               default_aug="birefnet_paper", loss=DIS5K_LOSS,
               size_multiple=SIZE_MULTIPLE, onnx_opset=19, onnx_dynamic_size=False,
               notes={"pipelines": PIPELINES, "official_repo": "ZhengPeng7/BiRefNet",
                      "licence": "MIT"})
BIREFNET_LITE_CARD = register_card(ModelCard(
    name="birefnet_lite", build=birefnet_lite, aliases=("birefnet-lite", "birefnet_swin_v1_t"),
    official_manifest="birefnet_swin_v1_t", **_COMMON))
BIREFNET_CARD = register_card(ModelCard(
    name="birefnet", build=birefnet, aliases=("birefnet_swin_v1_l",),
    official_manifest="birefnet_swin_v1_l", **_COMMON))


def preprocess(image: Any, size: tuple[int, int], pipeline: str = "repo") -> torch.Tensor:
    """One uint8 RGB image ``(H, W, 3)`` -> the normalised input ``(1, 3, h, w)`` of the
    ``"repo"`` (default) or ``"card"`` pipeline at ``size = (width, height)``."""
    from dataclasses import replace

    from salseg.models.preprocess import Preprocessor

    pre = replace(BIREFNET_PREPROCESSING, input_size=(size[1], size[0]), **PIPELINES[pipeline])
    return Preprocessor(pre)(image)[None]


def postprocess(logits: torch.Tensor, original_hw: tuple[int, int],
                pipeline: str = "repo") -> Any:
    """Logits ``(1, 1, h, w)`` -> the uint8 mask ``(H0, W0)`` the official pipeline writes."""
    from dataclasses import replace

    from salseg.models.restore import restore_alpha, to_uint8

    pre = replace(BIREFNET_PREPROCESSING, **PIPELINES[pipeline])
    return to_uint8(restore_alpha(torch.sigmoid(logits)[0, 0], tuple(original_hw), pre,
                                  pre.normalization))
